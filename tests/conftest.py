"""Session fixtures: one real Tango control system and in-process bridges per test process.

With pytest-xdist each worker process gets its own database and device servers (they start in
about a second), so tests never share mutable state across processes. TANGO_HOST and other
control-system variables are removed from the environment first: tests only ever talk to the
loopback stack they started.
"""

from __future__ import annotations

import os

import pytest
import tango

from mtango.config import Config
from mtango.demo import DEMO_DEVICE, start_tango_demo
from mtango.demo.stack import ControlSystem
from tests.bridge import InProcessBridge

for _name in [k for k in os.environ if k.startswith(("TANGO_", "EPICS_", "MTANGO_"))]:
    del os.environ[_name]

SLOW_SERVER = "DemoTangoTest/slow"
SLOW_DEVICE = "test/slow/1"
VICTIM_SERVER = "DemoTangoTest/victim"
VICTIM_DEVICE = "test/victim/1"


@pytest.fixture(scope="session")
def control_system(tmp_path_factory: pytest.TempPathFactory) -> ControlSystem:
    system = start_tango_demo(tmp_path_factory.mktemp("tango"))
    system.add_server(SLOW_SERVER, {"SlowDevice": [SLOW_DEVICE]})
    system.add_server(VICTIM_SERVER, {"DemoTangoTest": [VICTIM_DEVICE]})
    yield system
    system.stop()


@pytest.fixture(scope="session")
def tango_host(control_system: ControlSystem) -> str:
    return control_system.tango_host


@pytest.fixture(scope="session")
def host_path(control_system: ControlSystem) -> str:
    """``/tango/rest/rc3/hosts/<host>/<port>``: the prefix of every rc3 URL in the tests."""
    return f"/tango/rest/rc3/hosts/{control_system.db_host}/{control_system.db_port}"


@pytest.fixture(scope="session")
def device_path(host_path: str) -> str:
    return f"{host_path}/devices/{DEMO_DEVICE}"


# SlowDevice answers in 3 s; Tango's default client timeout (3 s) would make that a race.
TEST_TIMEOUT_MS = 6000


@pytest.fixture(scope="session")
def bridge(control_system: ControlSystem) -> InProcessBridge:
    """The bridge in its default (rc3) error mode."""
    running = InProcessBridge(
        Config(tango_host=control_system.tango_host, tango_timeout_ms=TEST_TIMEOUT_MS)
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def bridge_rc4(control_system: ControlSystem) -> InProcessBridge:
    running = InProcessBridge(
        Config(
            tango_host=control_system.tango_host,
            error_status="rc4",
            tango_timeout_ms=TEST_TIMEOUT_MS,
        )
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def proxy(control_system: ControlSystem) -> tango.DeviceProxy:
    """A direct PyTango client of the demo device: the reference the bridge is checked against."""
    return tango.DeviceProxy(control_system.trl(DEMO_DEVICE))


# -- EPICS: IOCs on their own loopback ports, bridges configured with those addresses only --------

EPICS_TIMEOUT_MS = 1000  # short connect/read timeouts keep the failure tests quick


def _running_ioc(factory: pytest.TempPathFactory, flavor: str, prefix: str, bulk: int = 0):
    from mtango.demo.ioc import start_ioc

    workdir = factory.mktemp(f"ioc-{prefix.rstrip(':')}")
    ioc = start_ioc(flavor, prefix=prefix, bulk=bulk, workdir=workdir)
    yield ioc
    ioc.stop()


@pytest.fixture(scope="session")
def caproto_ioc(tmp_path_factory: pytest.TempPathFactory):
    """The demo caproto IOC (every DBR type, arrays, enum, long string, alarm, counter)."""
    yield from _running_ioc(tmp_path_factory, "caproto", "cp:")


@pytest.fixture(scope="session")
def soft_ioc(tmp_path_factory: pytest.TempPathFactory):
    """A softioc IOC: real EPICS base records, plus 1000 ai records ``sf:bulk:NNNN``."""
    yield from _running_ioc(tmp_path_factory, "softioc", "sf:", bulk=1000)


@pytest.fixture(scope="session")
def restart_ioc(tmp_path_factory: pytest.TempPathFactory):
    """A caproto IOC that tests stop and start again (nothing else reads its PVs)."""
    yield from _running_ioc(tmp_path_factory, "caproto", "rs:")


@pytest.fixture(scope="session")
def epics_config(caproto_ioc, soft_ioc, restart_ioc) -> Config:
    return Config(
        epics_ca_addr_list=(caproto_ioc.address, soft_ioc.address, restart_ioc.address),
        epics_connect_timeout_ms=EPICS_TIMEOUT_MS,
        epics_read_timeout_ms=EPICS_TIMEOUT_MS,
    )


@pytest.fixture(scope="session")
def epics_bridge(epics_config: Config) -> InProcessBridge:
    running = InProcessBridge(epics_config).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def pyepics(caproto_ioc, soft_ioc, restart_ioc):
    """pyepics (libca, EPICS base's C client): the independent reference for every value.

    libca reads ``EPICS_CA_*`` once, when its context makes its first channel; the variables are
    set for that moment only, so no other test sees them.
    """
    import epics

    addresses = " ".join(i.address for i in (caproto_ioc, soft_ioc, restart_ioc))
    saved = {k: os.environ.get(k) for k in ("EPICS_CA_ADDR_LIST", "EPICS_CA_AUTO_ADDR_LIST")}
    os.environ.update(EPICS_CA_ADDR_LIST=addresses, EPICS_CA_AUTO_ADDR_LIST="NO")
    try:
        assert epics.caget(caproto_ioc.pv("double"), timeout=10) is not None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return epics


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Headless Chromium (installed when missing and running as root: tests/browser.py)."""
    from tests.browser import ensure_chromium

    path, why = ensure_chromium()
    if path is None:
        # Pages are features: without a browser they are untested, which must not pass.
        pytest.fail(f"headless Chromium is not available: {why}")
    return path


@pytest.fixture
def page(chromium_path, tmp_path):
    """A tab of a headless Chromium of the test's own (tests/browser.py)."""
    from tests.browser import Chromium

    browser = Chromium(chromium_path, tmp_path)
    opened = None
    try:
        opened = browser.page()
        yield opened
    finally:
        if opened is not None:
            opened.close()
        browser.stop()
