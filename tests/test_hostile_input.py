"""Malformed and hostile HTTP input: every answer is a 400-class FAILURE body (never a 500, never a
search on the network, never silence), whatever the part of the request that is wrong: the JSON
body, the query string, a path segment."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request

import pytest

from mtango.config import Config
from tests.bridge import InProcessBridge, Reply

V1 = "/epics/rest/v1"


def post_raw(bridge, path: str, data: bytes) -> Reply:
    request = urllib.request.Request(f"{bridge.base}{path}", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), error.read())


def failure_reason(reply: Reply, status: int = 400) -> str:
    assert reply.status == status, reply.body
    body = reply.json()
    assert body["quality"] == "FAILURE", body
    return body["errors"][0]["reason"]


@pytest.mark.parametrize(
    "data",
    [
        rb'["\ud800"]',  # a lone surrogate as a JSON escape
        rb'{"pvs": ["cp:double", "\udfff"]}',
        b'["\xed\xa0\x80"]',  # the same surrogate as (invalid) UTF-8 bytes
        b'["\xff"]',  # not UTF-8 at all
        b'["cp:double", NaN]',  # not JSON (NaN is Python's extension)
        b"[" * 100_000 + b"]" * 100_000,  # deeper than any parser recursion
    ],
)
def test_bad_json_bodies_are_400(epics_bridge, data):
    assert failure_reason(post_raw(epics_bridge, f"{V1}/pvs/value", data)) == "BadBody"


def test_a_paired_surrogate_escape_is_text(epics_bridge):
    # "\ud83d\ude00" is one character (U+1F600): JSON text, but no PV name.
    reply = post_raw(epics_bridge, f"{V1}/pvs/value", rb'["\ud83d\ude00"]')
    assert reply.status == 200, reply.body
    assert reply.json()[0]["errors"][0]["reason"] == "BadName"


@pytest.fixture
def tango_paths(host_path: str, device_path: str) -> dict[str, str]:
    return {"host": host_path, "device": device_path}


@pytest.mark.parametrize(
    "path",
    [
        # percent-encoded bytes that are not UTF-8 (a lone surrogate, a stray byte)
        f"{V1}/pvs?pv=%ED%A0%80",
        f"{V1}/pvs/%ED%A0%80/value",
        f"{V1}/pvs/value?pv=cp:double&pv=%ff",
        f"{V1}/pvs/cp:double/value?encoding=%ff",
        "{device}/attributes/value?attr=%ff",
        "{device}/attributes/long_scalar/value?filter=%C0%80",
        "{host}/devices?wildcard=%ED%B0%80",
        "/tango/rest/rc3/hosts/%ff/10000",
        "/tango/rest?x=%ff",
        # a "%" that starts no escape
        f"{V1}/pvs/%",
        f"{V1}/pvs/%zz",
        f"{V1}/pvs/%zz/value",
        f"{V1}/pvs/a%2",
        f"{V1}/pvs?pv=%zz",
        f"{V1}/pvs/value?pv=cp:double&pv=50%",
        "{device}/attributes/value?attr=long_scalar&range=0-1%",
    ],
)
def test_urls_that_are_not_percent_encoded_utf8_are_400(bridge, epics_bridge, tango_paths, path):
    target = epics_bridge if path.startswith(V1) else bridge
    reply = target.get(path.format(**tango_paths))
    assert failure_reason(reply) == "BadEncoding"


def test_bad_percent_encoding_opens_no_channel(epics_bridge):
    for path in ("/pvs/%", "/pvs/%zz/value", "/pvs?pv=%zz", "/pvs/value?pv=%zz&pv=%"):
        assert failure_reason(epics_bridge.get(V1 + path)) == "BadEncoding"
    channels = epics_bridge.app.ctx.epics.pool.channels
    assert not {"%", "%zz"} & set(channels), sorted(channels)


def test_a_percent_encoded_percent_is_a_name(epics_bridge):
    # "%25zz" is the valid escape of the name "%zz": asked for (and not found) like any other.
    reply = epics_bridge.get(f"{V1}/pvs/value?pv=%25zz")
    assert reply.status == 200, reply.body
    assert reply.json()[0]["name"] == "%zz"


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the bridge answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("control", [b"\x00", b"\x01", b"\x7f"])
def test_a_control_byte_in_the_request_line_is_400_and_one_log_line(bridge, caplog, control):
    """200 such requests: each is answered 400 with the FAILURE body, and the log gets a short
    line now and then (rate-limited), not a 43-line traceback per request."""
    request = b"GET /tango/rest" + control + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with caplog.at_level(logging.INFO):
        for _ in range(200):
            answer = raw_exchange(bridge.port, request)
            assert answer.startswith(b"HTTP/1.1 400 "), answer
            assert b'"quality":"FAILURE"' in answer, answer
    records = [r for r in caplog.records if r.name.startswith(("sanic", "mtango"))]
    assert len(records) <= 3, [r.getMessage() for r in records]
    assert not any(r.exc_info for r in records)
    assert sum(len(r.getMessage()) for r in records) < 1000


def test_a_body_larger_than_any_endpoint_needs_is_413(epics_bridge):
    """A declared 90 MB body (10 bytes sent) is refused at once, not waited for."""
    head = (b"POST /epics/rest/v1/pvs/value HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 90000000\r\n\r\n")
    answer = raw_exchange(epics_bridge.port, head + b'["cp:long"')
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b'"quality":"FAILURE"' in answer, answer


def test_the_largest_batch_fits_the_body_limit(epics_bridge):
    """epics_batch_max names of the longest kind, every character escaped, are still read: the
    answer is about the names (none is valid), not about the size of the body."""
    config = epics_bridge.config
    name = '"' * 254 + "/"  # 509 bytes as JSON; "/" is in no PV name
    data = json.dumps([name] * config.epics_batch_max, indent=1).encode()
    reply = post_raw(epics_bridge, f"{V1}/pvs/value", data)
    assert reply.status == 200, reply.body[:300]
    assert reply.json()[0]["errors"][0]["reason"] == "BadName"


@pytest.fixture(scope="module")
def impatient_bridge() -> InProcessBridge:
    running = InProcessBridge(Config(http_request_timeout=1, http_keep_alive_timeout=1)).start()
    yield running
    running.stop()


def test_idle_connections_are_closed_after_the_keep_alive_timeout(impatient_bridge):
    with socket.create_connection(("127.0.0.1", impatient_bridge.port), timeout=30) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"live"}'):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert b"keep-alive" in answer.lower()
        assert sock.recv(65536) == b""  # closed by the bridge (30 s would be a socket timeout)


def test_an_unfinished_request_head_is_408(impatient_bridge):
    answer = raw_exchange(impatient_bridge.port, b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"quality":"FAILURE"' in answer, answer


def test_a_body_that_stops_arriving_is_408(impatient_bridge):
    """Within the size limit, but 10 of 1000 declared bytes: answered once the request timeout
    has passed without data, and closed (Sanic alone held it past its response timeout, and then
    waited for the rest of the body for good)."""
    head = (b"POST /epics/rest/v1/pvs/value HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    answer = raw_exchange(impatient_bridge.port, head + b'["cp:long"')
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"quality":"FAILURE"' in answer, answer


def test_header_values_lose_cr_lf_and_nul(bridge) -> None:
    """Sanic's header sanitising, kept by the app's faster version (mtango/app.py): a value with
    CR, LF or NUL cannot split a header; every other value is sent as it is."""
    from sanic.response import HTTPResponse

    response = HTTPResponse(headers={"x-a": "one\r\nSet-Cookie: x=1\x00", "x-b": "plain, é"})
    headers = dict(response.processed_headers)
    assert headers[b"x-a"] == b"oneSet-Cookie: x=1"
    assert headers[b"x-b"] == "plain, é".encode()
