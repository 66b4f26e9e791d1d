"""Every failure answers the rc3 FAILURE body; its HTTP status follows the configured mode.

Each Tango failure is checked in both modes: ``rc3`` (the ``bridge`` fixture) answers HTTP 200 like
the Java mTango server, ``rc4`` (``bridge_rc4``) the real status. Errors of the bridge itself (bad
parameter, unknown route, forbidden host) carry their real status in both modes.
"""

from __future__ import annotations

import time

import pytest

from tests.bridge import Reply, poll
from tests.conftest import VICTIM_DEVICE, VICTIM_SERVER

MODES = ("rc3", "rc4")
ERROR_KEYS = {"reason", "description", "severity", "origin"}


@pytest.fixture(params=MODES)
def mode_bridge(request: pytest.FixtureRequest):
    """(mode, bridge) for each error-status mode."""
    mode = request.param
    return mode, request.getfixturevalue("bridge" if mode == "rc3" else "bridge_rc4")


def assert_failure(reply: Reply, status: int) -> list[dict[str, str]]:
    """The reply is a FAILURE body with ``status``; returns its error entries."""
    assert reply.status == status, reply.body
    assert reply.headers.get("x-mtango", "").startswith("mtango-bridge"), reply.headers
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    body = reply.json()
    assert set(body) == {"errors", "quality", "timestamp"}, body
    assert body["quality"] == "FAILURE"
    timestamp = body["timestamp"]
    assert isinstance(timestamp, int) and not isinstance(timestamp, bool)
    # Milliseconds since the epoch, made now (a seconds value would be ~1000 times smaller).
    assert abs(timestamp - time.time() * 1000) < 600_000, timestamp
    errors = body["errors"]
    assert errors, body
    for entry in errors:
        assert set(entry) == ERROR_KEYS, entry
        assert all(isinstance(entry[k], str) for k in ERROR_KEYS), entry
        assert entry["reason"] and entry["description"], entry
        assert entry["severity"] in ("WARN", "ERR", "PANIC"), entry
    return errors


def reasons(errors: list[dict[str, str]]) -> list[str]:
    return [e["reason"] for e in errors]


def tango_status(mode: str, rc4_status: int) -> int:
    return 200 if mode == "rc3" else rc4_status


# -- failures reported by Tango ---------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix", ["", "/state", "/attributes", "/attributes/long_scalar/value", "/commands"]
)
def test_unknown_device(mode_bridge, host_path, suffix):
    mode, bridge = mode_bridge
    reply = bridge.get(f"{host_path}/devices/no/such/device{suffix}")
    errors = assert_failure(reply, tango_status(mode, 404))
    assert "DB_DeviceNotDefined" in reasons(errors)


@pytest.mark.parametrize("suffix", ["value", "info", "value/plain"])
def test_unknown_attribute(mode_bridge, device_path, suffix):
    mode, bridge = mode_bridge
    errors = assert_failure(
        bridge.get(f"{device_path}/attributes/no_such_attribute/{suffix}"), tango_status(mode, 404)
    )
    assert "API_AttrNotFound" in reasons(errors)


def test_unknown_command(mode_bridge, device_path):
    mode, bridge = mode_bridge
    errors = assert_failure(
        bridge.get(f"{device_path}/commands/NoSuchCommand"), tango_status(mode, 404)
    )
    assert "API_CommandNotFound" in reasons(errors)


def test_failing_attribute(mode_bridge, device_path):
    """A read the device refuses (not "unknown", not "unreachable"): 400 in rc4."""
    mode, bridge = mode_bridge
    errors = assert_failure(
        bridge.get(f"{device_path}/attributes/no_value/value"), tango_status(mode, 400)
    )
    assert "DemoNoValue" in reasons(errors)
    assert any("no_value never has a value" in e["description"] for e in errors)


def test_failing_attribute_inside_multi_read(mode_bridge, device_path):
    """In ``attributes/value`` a failed attribute is a FAILURE item; the call itself succeeds."""
    _mode, bridge = mode_bridge
    reply = bridge.get(f"{device_path}/attributes/value?attr=long_scalar&attr=no_value")
    assert reply.status == 200, reply.body
    good, bad = reply.json()
    assert good["name"] == "long_scalar" and good["quality"] != "FAILURE"
    assert bad["name"] == "no_value" and bad["quality"] == "FAILURE"
    assert "DemoNoValue" in reasons(bad["errors"])


def test_dead_device(bridge, bridge_rc4, control_system, host_path):
    """A device whose server died: state UNKNOWN with 200 (Java), values FAILURE (503 in rc4).

    Both bridges hold a cached proxy of the device when its server stops; after the restart the
    same proxies must serve values again without any intervention.
    """
    device = f"{host_path}/devices/{VICTIM_DEVICE}"
    value = f"{device}/attributes/long_scalar/value"
    for running in (bridge, bridge_rc4):
        assert running.get(value).json()["value"] == 42
        assert running.get(f"{device}/state").json()["state"] == "ON"

    control_system.stop_server(VICTIM_SERVER)
    try:
        for mode, running in (("rc3", bridge), ("rc4", bridge_rc4)):
            state = running.get(f"{device}/state")
            assert state.status == 200, state.body
            assert state.headers.get("x-mtango")
            assert state.json()["state"] == "UNKNOWN"
            assert VICTIM_DEVICE in state.json()["status"]
            errors = assert_failure(running.get(value), tango_status(mode, 503))
            assert errors[0]["reason"].startswith("API_"), errors
    finally:
        control_system.restart_server(VICTIM_SERVER)

    for mode, running in (("rc3", bridge), ("rc4", bridge_rc4)):
        poll(f"{mode}: reads recovered after the restart",
             lambda running=running: (r := running.get(value)).status == 200
             and r.json().get("value") == 42, timeout=30, interval=0.2)
        assert running.get(f"{device}/state").json()["state"] == "ON"


# -- refused before any Tango call ------------------------------------------------------------


DISALLOWED = "/tango/rest/rc3/hosts/10.255.0.1/10000"


@pytest.mark.parametrize(
    "suffix",
    ["", "/devices", "/devices/sys/tg_test/1/state", "/devices/sys/tg_test/1/attributes/"
     "long_scalar/value", "/devices/sys/tg_test/1/attributes/value?attr=long_scalar"],
)
def test_disallowed_host_is_refused_without_connecting(mode_bridge, suffix):
    _mode, bridge = mode_bridge
    tango = bridge.tango
    before = (tango.databases.info(), tango.devices.info(), tango.reads.executed)

    errors = assert_failure(bridge.get(DISALLOWED + suffix), 403)

    assert reasons(errors) == ["TangoHostNotAllowed"]
    assert "10.255.0.1:10000" in errors[0]["description"]
    # No Database or DeviceProxy was looked up (not even a cache miss), no device call was made.
    assert (tango.databases.info(), tango.devices.info(), tango.reads.executed) == before


@pytest.mark.parametrize("host", ["a%2Cb", "a:1,b", "%3A%29"])
def test_host_names_with_separators_are_not_allowed(mode_bridge, host):
    """"," and ":" make no single host:port (TANGO_HOST's lists are configuration, not URLs):
    such a name is in no allow-list, so it is refused as any other database is."""
    _mode, bridge = mode_bridge
    errors = assert_failure(bridge.get(f"/tango/rest/rc3/hosts/{host}/10000/devices"), 403)
    assert reasons(errors) == ["TangoHostNotAllowed"]


@pytest.mark.parametrize("port", ["notaport", "0", "70000", "-1"])
def test_bad_port(mode_bridge, port):
    _mode, bridge = mode_bridge
    before = bridge.tango.databases.info()
    errors = assert_failure(bridge.get(f"/tango/rest/rc3/hosts/127.0.0.1/{port}/devices"), 400)
    assert reasons(errors) == ["BadPort"]
    assert bridge.tango.databases.info() == before


@pytest.mark.parametrize("value", ["abc", "5-2", "3-3", "-1-4", "1-", "1-2-3"])
def test_bad_range(mode_bridge, host_path, value):
    _mode, bridge = mode_bridge
    errors = assert_failure(bridge.get(f"{host_path}/devices?range={value}"), 400)
    assert reasons(errors) == ["BadRange"]


def test_range_past_the_end(mode_bridge, host_path):
    _mode, bridge = mode_bridge
    total = len(bridge.get(f"{host_path}/devices").json())
    errors = assert_failure(bridge.get(f"{host_path}/devices?range={total}-{total + 10}"), 416)
    assert reasons(errors) == ["RangeNotSatisfiable"]
    # The last item is still reachable: the 416 is about the start, not an off-by-one.
    assert bridge.get(f"{host_path}/devices?range={total - 1}-{total + 10}").status == 206


@pytest.mark.parametrize(
    "suffix",
    [
        "/devices/sys/tg_test/1*/state",  # wildcard in a device member
        "/devices/sys/tg%20test/1/state",  # space in a device family
        "/devices/sys/tg_test/%01/state",  # percent-encoded control character
        "/devices/sys/tg_test/1/attributes/long%27scalar/value",  # quote in an attribute
        "/devices/sys/tg_test/1/commands/Dev%22String",  # quote in a command
        "/devices/sys/tg_test/1/attributes/value?attr=long%22scalar",  # quote in ?attr=
        "/devices/sys/tg_test/1/attributes/value?attr=long%20scalar",  # space in ?attr=
        "/devices/sys/tg_test/1/attributes/info?attr=long_scalar&attr=a%00b",  # NUL in ?attr=
    ],
)
def test_malformed_names(mode_bridge, host_path, suffix):
    _mode, bridge = mode_bridge
    executed = bridge.tango.reads.executed
    errors = assert_failure(bridge.get(host_path + suffix), 400)
    assert reasons(errors) == ["BadName"]
    assert bridge.tango.reads.executed == executed


@pytest.mark.parametrize("what", ["value", "info"])
def test_missing_attr_parameter(mode_bridge, device_path, what):
    _mode, bridge = mode_bridge
    for query in ("", "?attr=", "?other=long_scalar"):
        errors = assert_failure(bridge.get(f"{device_path}/attributes/{what}{query}"), 400)
        assert reasons(errors) == ["MissingParameter"]


@pytest.mark.parametrize(
    "path",
    [
        "/tango/rest/rc3/no_such_resource",
        "/tango/rest/rc99",
        "/tango/rest/rc3/hosts/127.0.0.1",
        "/not/the/api",
    ],
)
def test_unknown_route(mode_bridge, path):
    _mode, bridge = mode_bridge
    errors = assert_failure(bridge.get(path), 404)
    assert errors[0]["reason"] == "NotFound"


def test_unknown_route_below_a_device(mode_bridge, device_path):
    _mode, bridge = mode_bridge
    assert_failure(bridge.get(f"{device_path}/no_such_collection"), 404)
    assert_failure(bridge.get(f"{device_path}/attributes/long_scalar/value/nope/more"), 404)


def test_failed_requests_leave_no_cycles(bridge, device_path) -> None:
    """A failed read's exceptions do not keep its objects in reference cycles (its futures, frames,
    request): they are freed at once, not left to the worker's rare cycle collections."""
    import gc

    assert b"FAILURE" in bridge.get(f"{device_path}/attributes/nonexistent_cycle/value").body
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(10):
            reply = bridge.get(f"{device_path}/attributes/nonexistent_cycle_{i}/value")
            assert b"FAILURE" in reply.body
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, BaseException)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not left, left
