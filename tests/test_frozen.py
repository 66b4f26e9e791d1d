"""A frozen Tango database or device server (SIGSTOP: the kernel still accepts connections, nothing
answers) must not stall the bridge: every request ends within ``tango_timeout_ms`` plus a small
margin, other work (``/health/live``, EPICS) goes on, and once a device is known to hang further
requests fail at once until one probe finds it back.

Bounds are generous (the deadline plus ``SLACK``): before the fix these requests took 9 s (a frozen
database: cppTango reconnects and retries) or 1, 2, 3 ... deadlines (queued behind a frozen device).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from mtango.config import Config
from mtango.demo import DEMO_DEVICE, start_tango_demo
from mtango.demo.stack import ControlSystem
from tests.bridge import InProcessBridge, poll
from tests.conftest import EPICS_TIMEOUT_MS

TIMEOUT_MS = 1000
SLACK = 1.5  # seconds past the deadline still accepted (a loaded 2-core CI machine)
BOUND = TIMEOUT_MS / 1000 + 0.25 + SLACK

FROZEN_SERVER = "DemoTangoTest/frozen"
FROZEN_DEVICE = "test/frozen/1"


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def timed(bridge: InProcessBridge, path: str) -> tuple[float, int, dict]:
    started = time.monotonic()
    reply = bridge.get(path, timeout=60)
    return time.monotonic() - started, reply.status, reply.json()


class Prober:
    """Asks ``paths`` one after another, over and over, until stopped; keeps every outcome."""

    def __init__(self, bridge: InProcessBridge, paths: list[str]) -> None:
        self.bridge, self.paths = bridge, paths
        self.outcomes: list[tuple[str, float, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                started = time.monotonic()
                try:
                    status: int | str = self.bridge.get(path, timeout=BOUND).status
                except OSError as exc:  # a probe left unanswered: the loop is stalled
                    status = type(exc).__name__
                self.outcomes.append((path, time.monotonic() - started, status))
            self._stop.wait(0.05)  # pacing between rounds, ended at once by __exit__

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


# -- a frozen database -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlSystem]:
    """A database of this module only: freezing it must not disturb the other tests."""
    system = start_tango_demo(tmp_path_factory.mktemp("frozen-db"))
    yield system
    system.stop()


def test_a_frozen_database_stalls_nothing(own_system: ControlSystem, caproto_ioc) -> None:
    bridge = InProcessBridge(Config(
        tango_host=own_system.tango_host, tango_timeout_ms=TIMEOUT_MS,
        epics_ca_addr_list=(caproto_ioc.address,),
        epics_connect_timeout_ms=EPICS_TIMEOUT_MS, epics_read_timeout_ms=EPICS_TIMEOUT_MS,
    )).start()
    prefix = f"/tango/rest/rc3/hosts/{own_system.db_host}/{own_system.db_port}"
    device = f"{prefix}/devices/{DEMO_DEVICE}"
    pv = f"/epics/rest/v1/pvs/{caproto_ioc.pv('double')}/value"
    try:
        assert bridge.get(device).status == 200  # the database proxy is built and cached
        assert bridge.get(pv).status == 200
        database = own_system.processes[0]
        assert database.name == "databaseds"
        tango_paths = ([device] * 6 + [f"{device}/properties/mythical_property"] * 4
                       + ["/health/ready"] * 4)
        with frozen(database.process.pid), Prober(bridge, ["/health/live", pv]) as prober:
            with ThreadPoolExecutor(len(tango_paths)) as pool:
                answers = list(pool.map(lambda p: timed(bridge, p), tango_paths))
        for path, (seconds, status, body) in zip(tango_paths, answers, strict=True):
            assert seconds < BOUND, f"{path} took {seconds:.1f} s"
            assert body["quality"] == "FAILURE", (path, body)
            assert status == (503 if path == "/health/ready" else 200), (path, status, body)
        timeouts = [b for _s, _st, b in answers if "TimedOut" in str(b)]
        assert timeouts, answers
        assert prober.outcomes, "the prober never ran"
        stalled = [o for o in prober.outcomes if o[2] != 200]
        assert not stalled, f"unanswered while the database was frozen: {stalled}"
        # Thawed: the database answers again and the bridge notices without a restart.
        poll("ready again", lambda: bridge.get("/health/ready").status == 200)
        assert bridge.get(device).json()["name"] == DEMO_DEVICE
    finally:
        bridge.stop()


# -- a frozen device server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def frozen_device(control_system: ControlSystem) -> Iterator[int]:
    """A device server of this module only; yields its pid."""
    server = control_system.add_server(FROZEN_SERVER, {"DemoTangoTest": [FROZEN_DEVICE]})
    yield server.managed.process.pid
    control_system.stop_server(FROZEN_SERVER)
    control_system.database().delete_server(FROZEN_SERVER)


def test_a_frozen_device_fails_within_the_deadline_then_fast(
    control_system: ControlSystem, frozen_device: int, proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The later requests must come before the next probe: HUNG_RETRY_S (1 s) after the last
    # failure was too short a wait on a loaded machine, and one of them was that probe (a
    # deadline, not a fast failure). Thawed, values come back at the first probe all the same.
    monkeypatch.setattr("mtango.tango.backend.HUNG_RETRY_S", 5.0)
    bridge = InProcessBridge(Config(
        tango_host=control_system.tango_host, tango_timeout_ms=TIMEOUT_MS, error_status="rc4",
    )).start()
    prefix = f"/tango/rest/rc3/hosts/{control_system.db_host}/{control_system.db_port}"
    device = f"{prefix}/devices/{FROZEN_DEVICE}"
    names = [a for a in proxy.get_attribute_list() if a.endswith(("_scalar", "_spectrum"))][:24]
    assert len(names) == 24, names
    try:
        assert bridge.get(f"{device}/attributes/{names[0]}/value").status == 200
        other = f"{prefix}/devices/{DEMO_DEVICE}/attributes/double_scalar/value"
        with frozen(frozen_device), Prober(bridge, ["/health/live", other]) as prober:
            with ThreadPoolExecutor(len(names)) as pool:
                answers = list(pool.map(
                    lambda a: timed(bridge, f"{device}/attributes/{a}/value"), names))
            # Known to hang now: the next requests fail at once instead of queueing.
            later = [timed(bridge, f"{device}/attributes/{a}/value") for a in names[:5]]
        for name, (seconds, status, body) in zip(names, answers, strict=True):
            assert seconds < BOUND, f"{name} took {seconds:.1f} s"
            assert status == 503, (name, body)
            assert body["errors"][0]["reason"] == "API_DeviceTimedOut", body
        for _seconds, status, body in later:
            assert status == 503
            assert body["errors"][0]["origin"] == "TangoBackend.hung", body
        key = (bridge.tango.host_key(control_system.db_host, str(control_system.db_port)),
               FROZEN_DEVICE)
        assert key in bridge.tango.targets.hung()
        assert not [o for o in prober.outcomes if o[2] != 200], prober.outcomes
        # Thawed: a probe gets through, values flow again, the device is no longer failed fast.
        poll("values again", lambda: bridge.get(
            f"{device}/attributes/{names[0]}/value").json().get("quality") == "ATTR_VALID")
        assert key not in bridge.tango.targets.hung()
    finally:
        bridge.stop()
