"""CORS for browser clients (tangojs sends credentials and an Authorization header).

A credentialed request needs the origin echoed (a ``*`` is refused by browsers), credentials
allowed and ``Authorization`` among the allowed headers. The preflight is answered by the CORS
layer alone: it must not run the route (no Tango call for an OPTIONS).
"""

from __future__ import annotations

import pytest

from mtango.config import Config
from mtango.demo import DEMO_DEVICE
from tests.bridge import InProcessBridge, Reply, http
from tests.conftest import SLOW_DEVICE

ORIGIN = "http://dashboard.example"
AUTHORIZATION = "Basic dGFuZ286dGFuZ28="  # tango:tango, what tangojs sends


def preflight(base: str, path: str, origin: str = ORIGIN) -> Reply:
    return http(
        "OPTIONS",
        base + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )


def header_list(reply: Reply, name: str) -> list[str]:
    return [v.strip().lower() for v in reply.headers.get(name, "").split(",") if v.strip()]


def assert_allows_credentialed(reply: Reply, origin: str = ORIGIN, echoed: bool = True) -> None:
    assert reply.headers.get("access-control-allow-origin") == origin, reply.headers
    assert reply.headers.get("access-control-allow-credentials") == "true", reply.headers
    if echoed:  # the answer depends on the request's Origin: caches must know
        assert "origin" in header_list(reply, "vary"), reply.headers


def test_preflight_allows_the_credentialed_request(bridge, device_path):
    reply = preflight(bridge.base, f"{device_path}/attributes/long_scalar/value")
    assert 200 <= reply.status < 300, reply
    assert_allows_credentialed(reply)
    assert "authorization" in header_list(reply, "access-control-allow-headers"), reply.headers
    assert "get" in header_list(reply, "access-control-allow-methods"), reply.headers
    assert reply.headers.get("x-mtango")


def test_preflight_does_not_run_the_route(bridge, host_path):
    """A preflight of a 3 s read: no read, no proxy, no Tango call of any kind."""
    tango = bridge.tango
    path = f"{host_path}/devices/{SLOW_DEVICE}/attributes/slow_scalar/value"
    before = (tango.reads.executed, tango.reads.shared, tango.devices.info(),
              tango.attributes.info(), tango.databases.info())

    reply = preflight(bridge.base, path)

    assert 200 <= reply.status < 300, reply
    assert_allows_credentialed(reply)
    assert reply.body in (b"", b"{}"), reply.body
    after = (tango.reads.executed, tango.reads.shared, tango.devices.info(),
             tango.attributes.info(), tango.databases.info())
    assert after == before


def test_credentialed_get(bridge, device_path, proxy):
    reply = http(
        "GET",
        f"{bridge.base}{device_path}/attributes/long_scalar/value",
        headers={"Origin": ORIGIN, "Authorization": AUTHORIZATION},
    )
    assert reply.status == 200, reply.body
    assert_allows_credentialed(reply)
    assert reply.json()["value"] == proxy.read_attribute("long_scalar").value
    # The JS client reads the range header of partial lists: it must be exposed.
    assert "content-range" in header_list(reply, "access-control-expose-headers")


def test_credentialed_error_response(bridge, device_path):
    """Failures carry the CORS headers too, or the browser hides the FAILURE body."""
    reply = http(
        "GET",
        f"{bridge.base}{device_path}/attributes/value",
        headers={"Origin": ORIGIN, "Authorization": AUTHORIZATION},
    )
    assert reply.status == 400
    assert_allows_credentialed(reply)
    assert reply.json()["quality"] == "FAILURE"


@pytest.fixture(scope="module")
def restricted(control_system):
    """A bridge that allows one origin only."""
    running = InProcessBridge(
        Config(tango_host=control_system.tango_host, cors_origins=("http://allowed.example",))
    ).start()
    yield running
    running.stop()


def test_restricted_origins(restricted, host_path):
    path = f"{host_path}/devices/{DEMO_DEVICE}/state"

    refused = preflight(restricted.base, path, origin=ORIGIN)
    assert "access-control-allow-origin" not in refused.headers, refused.headers
    assert "access-control-allow-credentials" not in refused.headers, refused.headers
    plain = http("GET", restricted.base + path, headers={"Origin": ORIGIN})
    assert plain.status == 200  # served (CORS is the browser's business), just not allowed
    assert "access-control-allow-origin" not in plain.headers, plain.headers

    allowed = preflight(restricted.base, path, origin="http://allowed.example")
    assert 200 <= allowed.status < 300
    # One allowed origin: the same answer for every request, no Vary needed.
    assert_allows_credentialed(allowed, "http://allowed.example", echoed=False)
    got = http("GET", restricted.base + path, headers={"Origin": "http://allowed.example"})
    assert_allows_credentialed(got, "http://allowed.example", echoed=False)
    assert got.json()["state"] == "ON"


@pytest.fixture(scope="module")
def two_origins(control_system):
    """A bridge that allows two origins: the answer depends on the request's Origin."""
    running = InProcessBridge(Config(
        tango_host=control_system.tango_host,
        cors_origins=("http://a.example", "http://b.example/"))).start()
    yield running
    running.stop()


def test_several_origins_are_echoed_with_vary(two_origins, host_path):
    path = f"{host_path}/devices/{DEMO_DEVICE}/state"
    for origin in ("http://a.example", "http://b.example"):
        got = http("GET", two_origins.base + path, headers={"Origin": origin})
        assert got.status == 200, got.body
        assert_allows_credentialed(got, origin)
    other = http("GET", two_origins.base + path, headers={"Origin": "http://c.example"})
    assert other.status == 200 and "access-control-allow-origin" not in other.headers


def test_preflight_of_a_method_not_allowed(bridge, device_path):
    """A method outside the allowed ones gets no Allow-Methods: the browser refuses it."""
    reply = http("OPTIONS", f"{bridge.base}{device_path}/state", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "PATCH"})
    assert reply.status == 200
    assert "access-control-allow-methods" not in reply.headers, reply.headers
    assert "access-control-allow-headers" not in reply.headers, reply.headers


def test_preflight_grants_only_allowed_headers(bridge, device_path):
    reply = http("OPTIONS", f"{bridge.base}{device_path}/state", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type, x-secret"})
    assert header_list(reply, "access-control-allow-headers") == ["content-type"], reply.headers
    assert reply.headers.get("access-control-max-age") == "600"
    assert reply.headers.get("content-type", "").startswith("text/plain"), reply.headers


def test_plain_options_is_answered_without_the_route(bridge, host_path):
    """OPTIONS without a preflight's headers: an empty 200, no route run, no CORS grant."""
    reply = http("OPTIONS", f"{bridge.base}{host_path}/devices/{SLOW_DEVICE}/attributes/"
                 "slow_scalar/value")
    assert reply.status == 200 and reply.body == b""
    assert "access-control-allow-methods" not in reply.headers
