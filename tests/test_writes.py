"""Writes through the HTTP routes, as clients send them: permission, conversion, audit, CORS.

Against a device server of its own (``tests/writes_server.py``, ``test/writes/2``: the demo
device plus what writes need, so no other test sees its values change) and the caproto IOC's
``w:`` PVs. The backends' conversions are tested in tests/test_tango_writes.py and
tests/test_epics_writes.py; this module checks what the HTTP side adds.
"""

from __future__ import annotations

import asyncio
import base64
import http.server as http_server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from mtango.config import Config
from mtango.security.passwords import hash_password
from mtango.security.users import token_digest
from tests.bridge import InProcessBridge, http, poll
from tests.browser import Chromium
from tests.conftest import EPICS_TIMEOUT_MS, TEST_TIMEOUT_MS
from tests.pvws_client import PvwsSocket

SERVER = "WritesTest/routes"
DEVICE = "test/writes/2"
TOKEN = "operator-token-abcdefghijklmnopqrstuvwxyz0123456789"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ALICE, BOB = basic("alice", "alice-pw"), basic("bob", "bob-pw")
ROBOT = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def device(control_system) -> str:
    if SERVER not in control_system.servers:
        control_system.add_server(SERVER, {"WritesTest": [DEVICE]}, module="tests.writes_server")
    return DEVICE


@pytest.fixture(scope="module")
def dev(control_system, device) -> tango.DeviceProxy:
    return tango.DeviceProxy(control_system.trl(device))


@pytest.fixture(scope="module")
def users_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.yaml"
    path.write_text(json.dumps({
        "users": {
            "alice": {"password": hash_password("alice-pw"), "roles": ["write"]},
            "bob": {"password": hash_password("bob-pw"), "roles": ["read"]},
            "robot": {"tokens": [token_digest(TOKEN)], "roles": ["operator"]},
        },
        "roles": {"operator": {"tango_allow": [f"{DEVICE}/long_scalar"],
                               "pv_allow": ["cp:w:.*"], "pv_deny": ["cp:w:enum"]}},
    }))
    return path


@pytest.fixture(scope="module")
def guarded(control_system, caproto_ioc, users_file, device, tmp_path_factory
            ) -> Iterator[InProcessBridge]:
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    running = InProcessBridge(Config(
        tango_host=control_system.tango_host, tango_timeout_ms=TEST_TIMEOUT_MS,
        epics_ca_addr_list=(caproto_ioc.address,), epics_connect_timeout_ms=EPICS_TIMEOUT_MS,
        epics_read_timeout_ms=EPICS_TIMEOUT_MS, writes="on", auth="basic",
        users_file=str(users_file), audit_log=str(audit),
        cors_origins=("http://127.0.0.1:1",)))  # replaced per test where a page needs it
    running.audit = audit
    running.start()
    yield running
    running.stop()


def device_url(bridge, control_system, device: str = DEVICE) -> str:
    host = control_system.tango_host.replace(":", "/")
    return f"{bridge.base}/tango/rest/rc3/hosts/{host}/devices/{device}"


def audit_lines(bridge) -> list[dict]:
    return [json.loads(line) for line in bridge.audit.read_text().splitlines()]


def test_who_may_write_and_the_audit_of_each_attempt(guarded, control_system, dev) -> None:
    url = device_url(guarded, control_system) + "/attributes/long_scalar/value?v=1234"
    dev.write_attribute("long_scalar", 7)
    seen = len(audit_lines(guarded))
    no_user = http("PUT", url)
    assert no_user.status == 401
    assert no_user.headers["www-authenticate"].startswith('Basic realm="mtango-bridge"')
    assert http("PUT", url, basic("alice", "nope")).status == 401
    reader = http("PUT", url, BOB)
    assert reader.status == 403 and reader.json()["errors"][0]["reason"] == "WriteDenied"
    assert dev.read_attribute("long_scalar").w_value == 7  # nothing written so far
    written = http("PUT", url, ALICE)
    assert written.status == 200, written.body
    assert written.json()["value"] == 1234 and "last-modified" in written.headers
    assert dev.read_attribute("long_scalar").w_value == 1234
    lines = audit_lines(guarded)[seen:]
    assert [(x["user"], x["result"], x["status"]) for x in lines] == [
        ("anonymous", "refused", 401), ("alice", "refused", 401), ("bob", "refused", 403),
        ("alice", "ok", 200)]
    ok = lines[-1]
    assert ok["target"] == {"host": control_system.tango_host, "device": DEVICE,
                            "attribute": "long_scalar"}
    assert (ok["before"], ok["sent"], ok["after"]) == (7, 1234, 1234)
    assert ok["address"] == "127.0.0.1" and ok["auth"] == "basic" and ok["protocol"] == "rc3"
    assert lines[0]["reason"].startswith("Unauthorized")


def test_role_name_rules_decide_per_target(guarded, control_system, dev) -> None:
    base = device_url(guarded, control_system)
    allowed = http("PUT", f"{base}/attributes/long_scalar/value?v=55", ROBOT)
    assert allowed.status == 200, allowed.body
    denied = http("PUT", f"{base}/attributes/double_scalar/value?v=1", ROBOT)
    assert denied.status == 403 and denied.json()["errors"][0]["reason"] == "WriteDenied"
    pv = f"{guarded.base}/epics/rest/v1/pvs"
    assert http("PUT", f"{pv}/cp:w:long/value", ROBOT, body=5).status == 200
    assert http("PUT", f"{pv}/cp:w:enum/value", ROBOT, body="On").status == 403
    line = audit_lines(guarded)[-1]
    assert (line["user"], line["auth"], line["result"]) == ("robot", "bearer", "refused")
    assert line["target"] == {"pv": "cp:w:enum"}


def test_every_tango_write_form_round_trips(guarded, control_system, dev) -> None:
    base = device_url(guarded, control_system)
    # One attribute: ?v=, a JSON body, a bare text body, a spectrum as repeated v.
    assert http("PUT", f"{base}/attributes/double_scalar_w/value?v=2.5", ALICE).json()[
        "value"] == 2.5
    assert http("PUT", f"{base}/attributes/double_scalar_w/value", ALICE, body=b"3.25").json()[
        "value"] == 3.25
    assert http("PUT", f"{base}/attributes/string_scalar/value", ALICE,
                body=b"plain words").json()["value"] == "plain words"
    spectrum = http("PUT", f"{base}/attributes/long_spectrum_rw/value?v=4&v=5", ALICE).json()
    assert spectrum["value"] == [4, 5]
    assert list(dev.read_attribute("long_spectrum_rw").w_value) == [4, 5]
    # Several attributes as the tangojs connector sends them, and rc3's first form.
    many = http("PUT", f"{base}/attributes/value?long_scalar=11&double_scalar_w=1.5&"
                "string_scalar=hi", ALICE)
    assert [i["value"] for i in many.json()] == [11, 1.5, "hi"], many.body
    early = http("PUT", f"{base}/attributes?long_scalar=12&double_scalar_w=oops", ALICE).json()
    assert early[0]["value"] == 12 and early[1]["quality"] == "FAILURE"
    assert dev.read_attribute("long_scalar").w_value == 12
    lines = audit_lines(guarded)[-2:]
    assert [(x["target"]["attribute"], x["result"]) for x in lines] == [
        ("long_scalar", "ok"), ("double_scalar_w", "failed")]
    # A value that cannot be converted: 400, nothing written.
    bad = http("PUT", f"{base}/attributes/long_scalar/value?v=12.5", ALICE)
    assert bad.status == 400 and dev.read_attribute("long_scalar").w_value == 12
    # A read-only attribute: 405, Allow: GET, nothing sent to the device.
    read_only = http("PUT", f"{base}/attributes/short_scalar_ro/value?v=1", ALICE)
    assert read_only.status == 405 and read_only.headers["allow"] == "GET"
    assert read_only.json()["errors"][0]["reason"] == "API_AttrNotWritable"
    # async: 204 at once.
    assert http("PUT", f"{base}/attributes/long_scalar/value?v=13&async=true", ALICE
                ).status == 204
    poll("the async write", lambda: dev.read_attribute("long_scalar").w_value == 13)
    # Commands: JSON, the tangojs connector's bare text (with and without text/plain), v1.
    cases = [
        ("DevDouble", b"3.5", None, 3.5),
        ("DevString", b"hello tangojs", {"Content-Type": "text/plain"}, "hello tangojs"),
        ("DevVarDoubleArray", b"1.5,2.5,4", None, [1.5, 2.5, 4.0]),
        ("DevVarLongArray", b"[1, 2]", {"Content-Type": "application/json"}, [1, 2]),
        ("DevLong", json.dumps({"host": "x", "device": DEVICE, "name": "DevLong",
                                "input": 7}).encode(), None, 7),
        ("DevBoolean", b"true", None, True),
    ]
    for command, body, headers, output in cases:
        reply = http("PUT", f"{base}/commands/{command}", {**ALICE, **(headers or {})},
                     body=body)
        assert reply.status == 200, (command, reply.body)
        assert reply.json() == {"name": command, "output": output}, reply.body
    void = http("PUT", f"{base}/commands/DevVoid", ALICE, body=b"")
    assert void.status == 200 and void.json()["name"] == "DevVoid"
    # Properties: device and attribute.
    props = http("PUT", f"{base}/properties?route_test=a&route_test=b&other_test=c", ALICE)
    assert props.status == 200, props.body
    assert list(dev.get_property("route_test")["route_test"]) == ["a", "b"]
    assert http("DELETE", f"{base}/properties/route_test", ALICE).status == 204
    assert list(dev.get_property("route_test")["route_test"]) == []
    attr_prop = http("PUT", f"{base}/attributes/long_scalar/properties/route_note?value=x",
                     ALICE)
    assert attr_prop.status == 200 and attr_prop.json() == {"route_note": ["x"]}
    assert http("DELETE", f"{base}/attributes/long_scalar/properties/route_note",
                ALICE).status == 204
    info = http("PUT", f"{base}/attributes/long_scalar/info", ALICE,
                body={"label": "Route label"})
    assert info.status == 200 and info.json()["label"] == "Route label", info.body
    assert dev.get_attribute_config("long_scalar").label == "Route label"
    http("PUT", f"{base}/attributes/long_scalar/info", ALICE, body={"label": "long_scalar"})


def test_reads_from_events_never_answer_from_before_a_write(guarded, control_system, dev) -> None:
    """The bridge polls long_scalar (no Tango events) for a stream; right after a write, a read
    that accepts events (?max_age=) must answer the written value, not the last poll's."""
    from tests.sse import SseStream

    attribute = f"{control_system.tango_host}/{DEVICE}/long_scalar_rww"
    base = device_url(guarded, control_system) + "/attributes/long_scalar_rww/value"
    with SseStream(f"{guarded.base}/live/stream?tango={attribute}") as stream:
        poll("a first value", lambda: stream.snapshot())
        assert http("GET", base + "?max_age=600000").headers.get("x-mtango-from-events")
        for value in (4321, 4322, 4323):
            assert http("PUT", f"{base}?v={value}", ALICE).status == 200
            read = http("GET", base + "?max_age=600000")
            assert read.json()["value"] == value, read.body


def test_epics_and_pvws_writes(guarded, pyepics) -> None:
    pv = f"{guarded.base}/epics/rest/v1/pvs"
    reply = http("PUT", f"{pv}/cp:w:double/value", ALICE, body=12.5)
    assert reply.status == 200 and reply.json()["value"] == 12.5
    assert pyepics.caget("cp:w:double", timeout=10) == 12.5
    assert http("PUT", f"{pv}/cp:w:enum/value?v=Fault", ALICE).json()["text"] == "Fault"
    assert http("PUT", f"{pv}/cp:w:readonly/value", ALICE, body=1).status == 403
    assert http("PUT", f"{pv}/cp:w:double/value", ALICE, body="abc").status == 400
    line = audit_lines(guarded)[-1]
    assert (line["protocol"], line["result"], line["status"]) == ("epics", "failed", 400)

    async def pvws() -> list[dict]:
        url = guarded.base.replace("http", "ws") + "/pvws/pv"
        async with PvwsSocket(url, additional_headers=ALICE) as sock:
            await sock.send({"type": "subscribe", "pvs": ["cp:w:long"]})
            await sock.until("the first update", lambda m: sock.updates("cp:w:long"))
            await sock.send({"type": "write", "pv": "cp:w:long", "value": 77})
            await sock.until("the new value", lambda m: any(
                u.get("value") == 77 for u in sock.updates("cp:w:long")))
            await sock.send({"type": "write", "pv": "cp:w:long", "value": "x"})
            return await sock.until("an error", lambda m: [x for x in m if x["type"] == "error"])

    errors = asyncio.run(pvws())
    assert "cp:w:long" in errors[0]["message"]
    assert pyepics.caget("cp:w:long", timeout=10) == 77
    pvws_lines = [x for x in audit_lines(guarded) if x["protocol"] == "pvws"]
    assert [(x["user"], x["result"], x["sent"]) for x in pvws_lines[-2:]] == [
        ("alice", "ok", 77), ("alice", "failed", None)]


def test_a_page_of_another_origin_writes_with_credentials(control_system, caproto_ioc,
                                                          users_file, chromium_path,
                                                          tmp_path, pyepics) -> None:
    """The browser's CORS preflight of a PUT with Authorization and a JSON body succeeds for an
    allowed origin (and runs no handler), then the PUT itself."""
    page_dir = tmp_path / "site"
    page_dir.mkdir()
    (page_dir / "index.html").write_text("<!doctype html><title>other origin</title>")
    handler = lambda *a, **k: http_server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(page_dir), **k)
    site = http_server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{site.server_address[1]}"
    bridge = InProcessBridge(Config(
        tango_host=control_system.tango_host, epics_ca_addr_list=(caproto_ioc.address,),
        epics_connect_timeout_ms=EPICS_TIMEOUT_MS, epics_read_timeout_ms=EPICS_TIMEOUT_MS,
        writes="on", auth="basic", users_file=str(users_file), cors_origins=(origin,))).start()
    browser = Chromium(chromium_path, tmp_path)
    try:
        page = browser.page()
        page.navigate(f"{origin}/index.html")
        page.wait_for("document.title === 'other origin'")
        auth = ALICE["Authorization"]
        result = page.evaluate(f"""
            fetch("{bridge.base}/epics/rest/v1/pvs/cp:w:short/value", {{
                method: "PUT", credentials: "include",
                headers: {{"Authorization": "{auth}", "Content-Type": "application/json"}},
                body: "321"}})
            .then(r => r.json().then(b => r.status + " " + b.value))
            .catch(e => "failed: " + e)""")
        assert result == "200 321", result
        assert pyepics.caget("cp:w:short", timeout=10) == 321
        preflight = http("OPTIONS", f"{bridge.base}/epics/rest/v1/pvs/cp:w:short/value", {
            "Origin": origin, "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status in (200, 204)
        assert "PUT" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert preflight.headers["access-control-allow-origin"] == origin
        other = http("OPTIONS", f"{bridge.base}/epics/rest/v1/pvs/cp:w:short/value", {
            "Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        browser.stop()
        bridge.stop()
        site.shutdown()
