"""With writes off (the default) every write endpoint is 403 ``WritesOff`` and changes nothing.

Checked on the device (DeviceProxy) and the IOC (pyepics): the values and properties are as they
were, the command did not run, and every attempt is an audit line saying "refused".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from mtango.config import Config
from mtango.demo import DEMO_DEVICE
from tests.bridge import InProcessBridge, http
from tests.conftest import EPICS_TIMEOUT_MS, TEST_TIMEOUT_MS
from tests.pvws_client import PvwsSocket


@pytest.fixture(scope="module")
def read_only(control_system, caproto_ioc, tmp_path_factory) -> Iterator[InProcessBridge]:
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    running = InProcessBridge(Config(
        tango_host=control_system.tango_host, tango_timeout_ms=TEST_TIMEOUT_MS,
        epics_ca_addr_list=(caproto_ioc.address,), epics_connect_timeout_ms=EPICS_TIMEOUT_MS,
        epics_read_timeout_ms=EPICS_TIMEOUT_MS, audit_log=str(audit)))
    running.audit_path = audit
    running.start()
    yield running
    running.stop()


def test_every_write_endpoint_is_refused_and_nothing_changes(read_only, control_system, proxy,
                                                             pyepics) -> None:
    host = control_system.tango_host.replace(":", "/")
    device = f"{read_only.base}/tango/rest/rc3/hosts/{host}/devices/{DEMO_DEVICE}"
    before = {
        "double_scalar": proxy.read_attribute("double_scalar").w_value,
        "long_scalar": proxy.read_attribute("long_scalar").w_value,
        "property": proxy.get_property("written_by_test")["written_by_test"],
        "pv": pyepics.caget("cp:double", timeout=10),
    }
    requests = [
        ("PUT", f"{device}/attributes/double_scalar/value?v=42", None),
        ("PUT", f"{device}/attributes/double_scalar/value", b"42"),
        ("PUT", f"{device}/attributes/value?double_scalar=42&long_scalar=7", None),
        ("PUT", f"{device}/attributes?long_scalar=7", None),
        ("PUT", f"{device}/attributes/double_scalar/info", b'{"label": "x"}'),
        ("PUT", f"{device}/attributes/double_scalar/properties/label?value=x", None),
        ("DELETE", f"{device}/attributes/double_scalar/properties/label", None),
        ("PUT", f"{device}/commands/DevDouble", b"3.5"),
        ("PUT", f"{device}/commands/Init", b""),
        ("PUT", f"{device}/properties?written_by_test=x", None),
        ("POST", f"{device}/properties/written_by_test?value=x", None),
        ("DELETE", f"{device}/properties/written_by_test", None),
        ("PUT", f"{read_only.base}/epics/rest/v1/pvs/cp:double/value", b"5"),
        ("PUT", f"{read_only.base}/epics/rest/v1/pvs/cp:double/value?v=5", None),
    ]
    for method, url, body in requests:
        reply = http(method, url, body=body)
        assert reply.status == 403, (method, url, reply.body)
        assert reply.json()["errors"][0]["reason"] == "WritesOff", reply.body

    async def pvws_write() -> dict:
        async with PvwsSocket(read_only.base.replace("http", "ws") + "/pvws/pv") as sock:
            await sock.send({"type": "write", "pv": "cp:double", "value": 5})
            return (await sock.until("an error", lambda m: [x for x in m
                                                            if x["type"] == "error"]))[0]

    error = asyncio.run(pvws_write())
    assert "WritesOff" in error["message"] and "nothing was written" in error["message"]
    assert proxy.read_attribute("double_scalar").w_value == before["double_scalar"]
    assert proxy.read_attribute("long_scalar").w_value == before["long_scalar"]
    assert proxy.get_property("written_by_test")["written_by_test"] == before["property"]
    assert pyepics.caget("cp:double", timeout=10) == before["pv"]
    lines = [json.loads(line) for line in read_only.audit_path.read_text().splitlines()]
    assert len(lines) == len(requests) + 2  # the multi-attribute PUT: a line per attribute
    assert {line["result"] for line in lines} == {"refused"}
    assert [line["protocol"] for line in lines][-1] == "pvws"
