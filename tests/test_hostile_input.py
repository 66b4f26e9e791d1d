"""Malformed and hostile HTTP input: every answer is a 400-class FAILURE body (never a 500, never a
search on the network, never silence), whatever the part of the request that is wrong: the JSON
body, the query string, a path segment."""

from __future__ import annotations

import logging
import socket
import urllib.request

import pytest

from tests.bridge import Reply

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
