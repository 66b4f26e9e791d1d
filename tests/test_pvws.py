"""The pvws WebSocket ``/pvws/pv`` against the caproto IOC and the softioc IOC.

pvws's messages (first update then deltas, list/clear/echo/errors, base64 arrays, enums, NaN),
and what the bridge does better: explicit ``connected``, one CA monitor for any number of
sockets, a per-socket rate with coalescing, a socket that never reads delaying nobody.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import numpy as np
import pytest

from mtango.config import Config
from mtango.epics.pvws import DISPLAY_KEYS
from tests.bridge import InProcessBridge, poll
from tests.conftest import EPICS_TIMEOUT_MS
from tests.pvws_client import PvwsSocket


def bridge_for(*iocs, **settings) -> InProcessBridge:
    return InProcessBridge(Config(
        epics_ca_addr_list=tuple(i.address for i in iocs),
        epics_connect_timeout_ms=EPICS_TIMEOUT_MS, epics_read_timeout_ms=EPICS_TIMEOUT_MS,
        events_linger_s=1.0, **settings)).start()


@pytest.fixture(scope="module")
def pv_bridge(caproto_ioc, soft_ioc, restart_ioc) -> Iterator[InProcessBridge]:
    running = bridge_for(caproto_ioc, soft_ioc, restart_ioc)
    yield running
    running.stop()


def ws_url(bridge, query: str = "") -> str:
    return bridge.base.replace("http://", "ws://") + "/pvws/pv" + query


def run(coroutine):
    return asyncio.run(coroutine)


def test_first_update_has_everything_then_only_changes(pv_bridge) -> None:
    async def scenario():
        async with PvwsSocket(ws_url(pv_bridge)) as sock:
            await sock.send({"type": "subscribe", "pvs": ["cp:double", "cp:counter"]})
            await sock.until("two counter updates", lambda m: len(sock.updates("cp:counter")) >= 2)
            await sock.until("the double", lambda m: sock.updates("cp:double"))
            return sock.updates("cp:double")[0], sock.updates("cp:counter")

    double, counter = run(scenario())
    for key in ("vtype", *DISPLAY_KEYS, "severity", "readonly", "value", "seconds", "nanos"):
        assert key in double, key
    assert double["vtype"] == "VDouble" and double["value"] == 1.234
    assert (double["units"], double["precision"]) == ("mm", 3)
    assert (double["min"], double["max"]) == (-10.0, 10.0)
    assert (double["warn_low"], double["warn_high"], double["alarm_low"],
            double["alarm_high"]) == (-5.0, 5.0, -9.0, 9.0)
    assert double["severity"] == "NONE" and double["connected"] is True
    assert double["readonly"] is True  # writes are off: a display must not offer them
    first, later = counter[0], counter[1]
    assert first["vtype"] == "VInt" and first["units"] == "s"
    assert set(later) <= {"type", "pv", "value", "seconds", "nanos"}, later
    assert later["value"] > first["value"]


def test_list_clear_echo_ping_and_errors(pv_bridge) -> None:
    async def scenario():
        async with PvwsSocket(ws_url(pv_bridge)) as sock:
            await sock.send({"type": "monitor", "pvs": ["cp:short", "cp:long"]})
            await sock.send({"type": "list"})
            listed = await sock.until("list", lambda m: [x for x in m if x["type"] == "list"])
            await sock.send({"type": "clear", "pvs": ["cp:short"]})
            await sock.send({"type": "list"})
            again = await sock.until("second list", lambda m: [
                x for x in m if x["type"] == "list"][1:])
            echo = '{"type": "echo", "body": [1, "two", {"3": null}]}'
            await sock.ws.send(echo)
            raw = await asyncio.wait_for(sock.ws.recv(), 30)
            while json.loads(raw).get("type") == "update":
                raw = await asyncio.wait_for(sock.ws.recv(), 30)
            pong = await sock.ws.ping()  # the server answers pings; its own come on "ping"
            await asyncio.wait_for(pong, 30)
            await sock.send({"type": "ping"})
            errors = []
            for frame in ("not json", '{"type": "bogus"}', '{"type": "subscribe"}',
                          '{"type": "subscribe", "pvs": ["bad name"]}',
                          '{"type": "write", "pv": "cp:double", "value": 5}'):
                await sock.send(frame)
                seen = len(errors)
                errors.append(await sock.until(frame, lambda m, n=seen: [
                    x for x in m if x["type"] == "error"][n:]))
            return listed[0], again[0], raw, [e[0]["message"] for e in errors]

    listed, again, echoed, errors = run(scenario())
    assert listed["pvs"] == ["cp:short", "cp:long"]
    assert again["pvs"] == ["cp:long"]
    assert echoed == '{"type": "echo", "body": [1, "two", {"3": null}]}'
    assert len(errors) == 5 and all(errors)
    assert "cp:double" in errors[-1] and "nothing was written" in errors[-1]
    assert pv_bridge.get("/epics/rest/v1/pvs/cp:double/value?fresh=1").json()["value"] == 1.234


@pytest.mark.parametrize(("pv", "field", "dtype"), [
    ("cp:waveform", "b64dbl", "<f8"),
    ("cp:int_waveform", "b64int", "<i4"),
    ("sf:waveform", "b64dbl", "<f8"),
    ("sf:wf_float", "b64flt", "<f4"),
    ("sf:wf_long", "b64int", "<i4"),
    ("sf:wf_short", "b64srt", "<i2"),
    ("sf:wf_char", "b64byt", "u1"),
])
def test_arrays_are_base64_equal_to_a_direct_read(pv_bridge, pyepics, pv, field, dtype) -> None:
    async def scenario():
        async with PvwsSocket(ws_url(pv_bridge)) as sock:
            await sock.send({"type": "subscribe", "pvs": [pv]})
            return (await sock.until(pv, lambda m: sock.updates(pv)))[0]

    update = run(scenario())
    decoded = np.frombuffer(base64.b64decode(update[field]), dtype=dtype)
    expected = np.asarray(pyepics.caget(pv, timeout=10))
    assert update["vtype"].endswith("Array")
    np.testing.assert_array_equal(decoded, expected.astype(dtype))


def test_enums_nan_strings_and_alarms(pv_bridge) -> None:
    names = ["cp:enum", "sf:mbbi", "cp:nan", "cp:string", "cp:alarm", "sf:ai_alarm"]

    async def scenario():
        async with PvwsSocket(ws_url(pv_bridge)) as sock:
            await sock.send({"type": "subscribe", "pvs": names})
            await sock.until("all", lambda m: all(sock.updates(n) for n in names))
            return {n: sock.updates(n)[0] for n in names}

    got = run(scenario())
    enum = got["cp:enum"]
    assert (enum["vtype"], enum["value"], enum["text"], enum["labels"]) == (
        "VEnum", 1, "On", ["Off", "On", "Fault"])
    assert (got["sf:mbbi"]["value"], got["sf:mbbi"]["text"]) == (1, "One")
    assert got["cp:nan"]["value"] == "NaN"
    assert got["cp:string"]["vtype"] == "VString"
    assert got["cp:string"]["text"] == "hello from the demo IOC"
    assert got["cp:alarm"]["severity"] == "MAJOR"
    assert got["sf:ai_alarm"]["severity"] == "MAJOR"


def test_a_thousand_pvs_in_one_subscribe(pv_bridge, soft_ioc) -> None:
    names = soft_ioc.bulk_names()
    assert len(names) == 1000

    async def scenario():
        async with PvwsSocket(ws_url(pv_bridge)) as sock:
            message = json.dumps({"type": "subscribe", "pvs": names})
            assert len(message) > 10_000
            await sock.send(message)
            await sock.until("1000 first updates", lambda m: len(
                {x["pv"] for x in m if x["type"] == "update"}) == 1000, timeout=60)
            return {x["pv"]: x["value"] for x in sock.messages if x["type"] == "update"}

    values = run(scenario())
    assert values == {name: float(i) for i, name in enumerate(names)}


def test_two_hundred_sockets_hold_one_monitor(caproto_ioc) -> None:
    bridge = bridge_for(caproto_ioc)
    try:
        async def scenario():
            socks = [PvwsSocket(ws_url(bridge)) for _ in range(200)]
            await asyncio.gather(*(s.__aenter__() for s in socks))
            try:
                await asyncio.gather(*(s.send({"type": "subscribe", "pvs": ["cp:short"]})
                                       for s in socks))
                await asyncio.gather(*(s.until("first update", lambda m, s=s: s.updates(
                    "cp:short")) for s in socks))
                health = bridge.get("/epics/rest/v1/health").json()
                summary = bridge.get("/pvws/summary").json()
                return [s.updates("cp:short")[0]["value"] for s in socks], health, summary
            finally:
                await asyncio.gather(*(s.__aexit__() for s in socks))

        values, health, summary = run(scenario())
        assert values == [-7] * 200
        assert health["subscriptions"] == 1 and health["channels"]["total"] == 1
        assert summary["clients"] == 200 and summary["subscriptions"] == 1
        assert summary["listeners"] == 200 and summary["pvs"] == 200
        poll("the sockets forgotten", lambda: bridge.get("/pvws/summary").json()["clients"] == 0)
    finally:
        bridge.stop()


def test_a_stopped_ioc_says_connected_false_then_comes_back(pv_bridge, restart_ioc) -> None:
    async def scenario():
        async with PvwsSocket(ws_url(pv_bridge)) as sock:
            await sock.send({"type": "subscribe", "pvs": ["rs:counter", "nobody:pvws"]})
            await sock.until("a value", lambda m: sock.updates("rs:counter"))
            never = await sock.until("never connected", lambda m: sock.updates("nobody:pvws"))
            restart_ioc.stop()
            try:
                lost = await sock.until("disconnected", lambda m: [
                    u for u in sock.updates("rs:counter") if u.get("connected") is False])
            finally:
                restart_ioc.start()
            count = len(sock.updates("rs:counter"))
            back = await sock.until("back", lambda m: [
                u for u in sock.updates("rs:counter")[count:] if u.get("connected")], 60)
            return never[0], lost[0], back[0]

    never, lost, back = run(scenario())
    assert never["connected"] is False and never["severity"] == "UNDEFINED"
    assert "did not connect" in never["error"]
    assert lost["connected"] is False and lost["severity"] == "UNDEFINED"
    assert lost["value"] == "NaN" and "lost the connection" in lost["error"]
    assert back["vtype"] == "VInt" and back["units"] == "s" and back["severity"] == "NONE"


def test_rate_limit_coalesces_and_delivers_the_latest(pv_bridge) -> None:
    async def scenario():
        async with PvwsSocket(ws_url(pv_bridge, "?max_rate=0.5")) as sock:
            await sock.send({"type": "subscribe", "pvs": ["cp:counter"]})
            await sock.until("four updates", lambda m: len(sock.updates("cp:counter")) >= 4, 60)
            return [u["value"] for u in sock.updates("cp:counter")]

    async def refused():
        async with PvwsSocket(ws_url(pv_bridge, "?max_rate=0")) as sock:
            await sock.until("an error", lambda m: m)
            return sock.messages[0], await sock.ws.wait_closed() or sock.ws.close_code

    values = run(scenario())
    error, code = run(refused())
    assert error["type"] == "error" and "max_rate" in error["message"]
    assert code == 1008
    # The counter adds 1 a second; at most one update every 2 s: the values in between are
    # coalesced and the one sent is the latest (steps of about 2, never 1 on average).
    assert (values[-1] - values[0]) / (len(values) - 1) >= 1.5, values


def test_a_socket_that_never_reads_delays_nobody(pv_bridge) -> None:
    async def scenario():
        # max_queue=1: the client library stops reading the socket after one message.
        async with PvwsSocket(ws_url(pv_bridge), max_queue=1) as stalled, \
                PvwsSocket(ws_url(pv_bridge)) as reader:
            await stalled.send({"type": "subscribe", "pvs": ["cp:fast_waveform", "cp:fast"]})
            await reader.send({"type": "subscribe", "pvs": ["cp:fast"]})
            await reader.until("updates", lambda m: len(reader.updates("cp:fast")) >= 5)

            def stalled_socket() -> dict | None:
                sockets = pv_bridge.get("/pvws/summary").json()["sockets"]
                found = [s for s in sockets if s["pvs"] == 2]
                return found[0] if found and found[0]["coalesced"] >= 50 else None

            # The waveform (80 kB a message, 10 a second) fills the socket's buffers; from then
            # on its updates are coalesced, one waiting per PV.
            figures = await asyncio.to_thread(poll, "coalescing", stalled_socket, 60)
            before = len(reader.updates("cp:fast"))
            await reader.until("more updates meanwhile",
                               lambda m: len(reader.updates("cp:fast")) >= before + 20)
            return figures

    figures = run(scenario())
    assert figures["queued"] <= 2


def test_arrays_over_the_size_limit_are_monitored_truncated(caproto_ioc, pyepics) -> None:
    """The size rule: a 100-element waveform (800 bytes) with EPICS_CA_MAX_ARRAY_BYTES 400 is
    refused to reads (413) but streamed to listeners with the 50 elements that fit."""
    bridge = bridge_for(caproto_ioc, epics_ca_max_array_bytes=400)
    try:
        async def scenario():
            async with PvwsSocket(ws_url(bridge)) as sock:
                await sock.send({"type": "subscribe", "pvs": ["cp:waveform"]})
                return (await sock.until("the waveform", lambda m: sock.updates("cp:waveform")))[0]

        update = run(scenario())
        decoded = np.frombuffer(base64.b64decode(update["b64dbl"]), dtype="<f8")
        expected = np.asarray(pyepics.caget("cp:waveform", timeout=10))
        assert len(expected) == 100
        np.testing.assert_array_equal(decoded, expected[:50])
        reply = bridge.get("/epics/rest/v1/pvs/cp:waveform/value")
        assert reply.status == 413
        assert reply.json()["errors"][0]["reason"] == "EPICS_ARRAY_TOO_LARGE"
    finally:
        bridge.stop()


def test_sanic_websockets_have_what_batched_sends_use() -> None:
    """``send_texts`` writes many frames at once through these names of Sanic's WebSocket; with
    another Sanic lacking them it would fall back to one write per message (slower, still right)."""
    from sanic.server.websockets.impl import WebsocketImplProtocol
    from websockets.server import ServerProtocol

    from mtango.api.pvws import SANIC_WS_NAMES

    ws = WebsocketImplProtocol(ServerProtocol())
    missing = [name for name in SANIC_WS_NAMES if not hasattr(ws, name)]
    assert not missing, f"Sanic's WebSocket lacks {missing}: update mtango/api/pvws.py send_texts"


def test_a_socket_that_dies_is_forgotten(caproto_ioc) -> None:
    """A client that vanishes without a close frame (its TCP connection aborted) is closed and
    forgotten: its PVs are released, and their monitor goes after the linger."""
    bridge = bridge_for(caproto_ioc)
    try:
        async def scenario():
            async with PvwsSocket(ws_url(bridge)) as sock:
                await sock.send({"type": "subscribe", "pvs": ["cp:fast", "cp:fast_waveform"]})
                await sock.until("updates", lambda m: len(sock.updates("cp:fast")) >= 3)
                assert bridge.get("/pvws/summary").json()["clients"] == 1
                sock.ws.transport.abort()

        run(scenario())
        summary = poll("the socket forgotten", lambda: (s := bridge.get(
            "/pvws/summary").json())["clients"] == 0 and s)
        assert summary["listeners"] == 0
        poll("the monitors dropped after the linger",
             lambda: bridge.get("/pvws/summary").json()["subscriptions"] == 0)
    finally:
        bridge.stop()
