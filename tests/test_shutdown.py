"""Stopping as Kubernetes does it: SIGTERM to ``main.py`` (the container's first process).

Readiness fails first while the bridge still serves and its streams still flow; then every open
stream gets a last word telling its client to reconnect (SSE: a ``reconnect`` event with a
``retry``; pvws: a 1012 close; the mTango subscription stream too), and the process exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
import websockets

from mtango.demo import DEMO_DEVICE
from mtango.shutdown import RECONNECT_MS, WS_SERVICE_RESTART
from tests.bridge import MainProcess, child_env, http, poll
from tests.pvws_client import PvwsSocket
from tests.sse import SseStream

DRAIN_S = 4.0  # long enough to look at readiness and the streams meanwhile
EXIT_S = DRAIN_S + 25  # drain, then Sanic's graceful shutdown and the backends' stop, with room


def start(tmp_path: Path, control_system, caproto_ioc, drain_s: float) -> MainProcess:
    main = MainProcess(["--workers", "2"], child_env(
        TANGO_HOST=control_system.tango_host, EPICS_CA_ADDR_LIST=caproto_ioc.address,
        MTANGO_SHUTDOWN_DRAIN_S=str(drain_s)), tmp_path / "main.log")
    try:
        main.wait_ready()
        poll("both workers ready (the banner)", lambda: "serving Tango" in main.log.read_text())
    except BaseException:
        main.stop()
        raise
    return main


def readiness(main: MainProcess) -> list[tuple[int, str]]:
    """/health/ready on eight connections at once (both workers race for them): status and
    the first error's reason."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(_: int) -> tuple[int, str]:
        reply = main.get("/health/ready")
        errors = reply.json().get("errors") or [{}]
        return reply.status, errors[0].get("reason", "")

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, range(8)))


def test_sigterm_fails_readiness_then_ends_streams_with_a_reconnect(
        tmp_path, control_system, caproto_ioc) -> None:
    main = start(tmp_path, control_system, caproto_ioc, DRAIN_S)
    try:
        assert {status for status, _ in readiness(main)} == {200}
        asyncio.run(_drain(main, control_system))
        poll("main.py exits", lambda: main.process.poll() is not None, timeout=EXIT_S)
        assert main.process.returncode == 0, main.log.read_text()
        assert "Traceback" not in main.log.read_text()
    finally:
        main.stop()


async def _drain(main: MainProcess, control_system) -> None:
    target = f"{control_system.tango_host}/{DEMO_DEVICE}/pushed_counter"
    live = await asyncio.to_thread(SseStream, f"{main.base}/live/stream?tango={target}")
    sub = http("POST", f"{main.base}/tango/subscriptions", body=[{
        "host": control_system.tango_host, "device": DEMO_DEVICE,
        "attribute": "pushed_counter", "type": "change"}]).json()
    mtango = await asyncio.to_thread(
        SseStream, f"{main.base}/tango/subscriptions/{sub['id']}/event-stream")
    streams = (live, mtango)
    try:
        async with PvwsSocket(f"ws://127.0.0.1:{main.port}/pvws/pv") as ws:
            await ws.send({"type": "subscribe", "pvs": ["cp:counter"]})
            await ws.until("a first update", lambda _: ws.updates("cp:counter"))
            await asyncio.to_thread(poll, "values on both streams", lambda: len(
                live.of("message")) >= 2 and len(mtango.of("1")) >= 2)
            # An rc3 long poll of a value that does not change: it would wait 30 s.
            host_path = f"/tango/rest/rc3/hosts/{control_system.tango_host.replace(':', '/')}"
            long_poll = asyncio.ensure_future(asyncio.to_thread(
                http, "GET", f"{main.base}{host_path}/devices/{DEMO_DEVICE}/attributes/"
                "long64_scalar/change?state=CONTINUATION&timeout=30000", timeout=60))

            main.process.send_signal(signal.SIGTERM)
            # Readiness fails at once, on every worker, while the process serves on.
            await asyncio.to_thread(poll, "/health/ready answering 503",
                                    lambda: main.get("/health/ready").status == 503)
            assert set(await asyncio.to_thread(readiness, main)) == {(503, "ShuttingDown")}
            assert main.get("/health/live").status == 200
            assert main.get(f"{host_path}/devices/{DEMO_DEVICE}/state").json()["state"] == "ON"
            # The streams still flow: new values after readiness failed, no final word yet.
            seen = len(live.of("message")), len(mtango.of("1"))
            await asyncio.to_thread(poll, "values while draining", lambda: len(
                live.of("message")) > seen[0] + 2 and len(mtango.of("1")) > seen[1] + 2)
            assert not live.of("reconnect") and not mtango.of("reconnect")
            assert not live.ended and not mtango.ended and not long_poll.done()

            # Then the last word, and the end of each stream.
            for stream in streams:
                await asyncio.to_thread(poll, "the reconnect event and the end", lambda s=stream: (
                    s.ended and s.of("reconnect")), timeout=EXIT_S)
                last = stream.snapshot()[-1]
                assert last.event == "reconnect" and last.id == ""  # keeps the Last-Event-ID
                assert json.loads(last.data)["retry_ms"] == RECONNECT_MS == stream.retry
            # The long poll is answered as at its timeout, with the value, when its worker stops
            # (the streams' end), not 30 s after it began.
            reply = await asyncio.wait_for(long_poll, 10)
            assert reply.status == 200 and reply.json()["value"] == 2**40 + 1, reply
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.until("the socket closed", lambda _: False, timeout=EXIT_S)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == WS_SERVICE_RESTART, closed.value
    finally:
        for stream in streams:
            stream.close()


def test_a_second_sigterm_stops_at_once(tmp_path, control_system, caproto_ioc) -> None:
    """An operator (or a supervisor) who does not want to wait: the drain is cut short."""
    main = start(tmp_path, control_system, caproto_ioc, 3600)
    try:
        main.process.send_signal(signal.SIGTERM)
        poll("/health/ready answering 503", lambda: main.get("/health/ready").status == 503)
        assert main.get("/health/live").status == 200  # draining: an hour to go
        main.process.send_signal(signal.SIGTERM)
        poll("main.py exits", lambda: main.process.poll() is not None, timeout=30)
        assert main.process.returncode == 0, main.log.read_text()
    finally:
        main.stop()


def test_sigint_stops_at_once(tmp_path, control_system, caproto_ioc) -> None:
    """Ctrl-C in a terminal is no rolling restart: no drain."""
    main = start(tmp_path, control_system, caproto_ioc, 3600)
    try:
        main.process.send_signal(signal.SIGINT)
        poll("main.py exits", lambda: main.process.poll() is not None, timeout=30)
        assert main.process.returncode == 0, main.log.read_text()
    finally:
        main.stop()
