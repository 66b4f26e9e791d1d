"""Event clients of the benchmark suite's ``events_*`` cases (bench/suite.py), in a process of
their own: ``python bench/suite_events_client.py MODE URL COUNT DURATION [NAME]``.

MODE is ``sse`` (URL: an event stream, ``http://127.0.0.1:PORT/tango/subscriptions/ID/event-stream``
or ``/live/stream?...``: each message's ``id:`` is the event's time stamp in ms), ``pvws`` (URL:
``ws://127.0.0.1:PORT/pvws/pv``, NAME the PV: one ``subscribe``, the updates' ``seconds`` and
``nanos`` merged as pvws.js does) or ``tangogql`` (URL: ``ws://127.0.0.1:PORT/socket``, NAME the
attribute ``device/attribute``: subprotocol ``graphql-ws`` (subscriptions-transport-ws:
``connection_init``, ``connection_ack``, ``start`` with the subscription ``attributes(fullNames:)``,
then ``data`` messages; ``ka`` keep-alives), the frames' ``timestamp`` in s).

COUNT clients on one asyncio loop (asyncio protocols, the WebSocket ones on the ``websockets``
package's sans-I/O protocol; only what the delay needs is parsed). Once every client is connected
and has had its first event, the window opens 1 s later and lasts DURATION s. Two JSON lines on
stdout: ``{"start": ..., "end": ...}`` (wall times of the window) when it is fixed, then the
result: deliveries in the window, delay percentiles (reception wall time - the event's time
stamp, ms), how many came within 100 ms, the distinct events seen and the source's rate
(distinct events - 1 over the span of their time stamps), per-client counts and problems. Any
failure (a client that cannot connect, a refused handshake, an error message, a connection the
server ends) exits non-zero with the reason on stderr.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import re
import sys
import time
from array import array
from typing import Any
from urllib.parse import urlsplit

import stream_clients
from stream_clients import StreamClient
from websockets.typing import Subprotocol

CONNECT_TIMEOUT = 60.0  # each client connected (handshake answered)
READY_TIMEOUT = 120.0  # every client has had its first event
CONNECTS_AT_ONCE = 16
ON_TIME_MS = 100.0  # deliveries with a delay up to this count as on time


class Window:
    """The measured window and what the clients recorded in it."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")
        self.delays = array("d")  # ms, every delivery in the window
        self.stamps: set[float] = set()  # distinct events (their time stamps, s) in the window

    def record(self, now: float, stamp: float) -> bool:
        if self.start <= now < self.end:
            self.delays.append((now - stamp) * 1000)
            self.stamps.add(stamp)
            return True
        return False


class Client(StreamClient):
    """A client whose events' time stamps go to the window; ready at its first event."""

    window: Window

    def event(self, now: float, stamp: float) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        if self.window.record(now, stamp):
            self.counted += 1


_ID = re.compile(rb"(?:^|\n)id: (\d+)\n")


class SseClient(Client, stream_clients.SseClient):
    """An event stream whose messages' ``id:`` is the event's time stamp in ms."""

    def __init__(self, url: str, window: Window) -> None:
        parts = urlsplit(url)
        super().__init__(parts.netloc, parts.path + (f"?{parts.query}" if parts.query else ""))
        self.window = window

    def messages(self, now: float, data: bytes, end: int) -> None:
        for raw in _ID.findall(data, 0, end):
            self.event(now, int(raw) / 1000)

    def eof_received(self) -> bool:
        self.lost = "the server ended the event stream"
        return False


class WsClient(Client, stream_clients.WsClient):
    def __init__(self, url: str, window: Window) -> None:
        super().__init__(url)
        self.window = window


class PvwsClient(WsClient):
    """pvws: one ``subscribe`` of one PV; the first update carries everything, the later ones
    what changed (``seconds``/``nanos`` among them when the time stamp did)."""

    def __init__(self, url: str, window: Window, name: str) -> None:
        super().__init__(url, window)
        self.name = name
        self.seconds = 0
        self.nanos = 0

    def opening(self) -> None:
        self.opened.set_result(None)
        self.send({"type": "subscribe", "pvs": [self.name]})

    def message(self, now: float, data: bytes) -> None:
        update = json.loads(data)
        if update.get("type") != "update" or update.get("connected") is False:
            self.problem(data.decode(errors="replace"))
            return
        self.seconds = update.get("seconds", self.seconds)
        self.nanos = update.get("nanos", self.nanos)
        self.event(now, self.seconds + self.nanos * 1e-9)


class TangoGqlClient(WsClient):
    """TangoGQL: subprotocol ``graphql-ws`` (subscriptions-transport-ws, ariadne's
    ``GraphQLWSHandler``); one subscription ``attributes(fullNames: [NAME])``."""

    subprotocols = [Subprotocol("graphql-ws")]

    def __init__(self, url: str, window: Window, name: str) -> None:
        super().__init__(url, window)
        self.query = ("subscription { attributes(fullNames: " + json.dumps([name])
                      + ") { device attribute value timestamp } }")

    def opening(self) -> None:
        self.send({"type": "connection_init", "payload": {}})

    def message(self, now: float, data: bytes) -> None:
        message = json.loads(data)
        kind = message.get("type")
        if kind == "data":
            payload = message.get("payload") or {}
            frame = (payload.get("data") or {}).get("attributes") or {}
            stamp = frame.get("timestamp")
            if payload.get("errors") or frame.get("error") or stamp is None:
                self.problem(data.decode(errors="replace"))
                return
            self.event(now, stamp)
        elif kind == "connection_ack":
            self.opened.set_result(None)
            self.send({"type": "start", "id": "1", "payload": {"query": self.query}})
        elif kind != "ka":  # keep-alive
            self.problem(data.decode(errors="replace"))
            if kind in ("connection_error", "error", "complete"):
                self.fail(f"TangoGQL: {data[:300]!r}")


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run(mode: str, url: str, count: int, duration: float, name: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    window = Window()
    parts = urlsplit(url)
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

    def make() -> Client:
        if mode == "sse":
            return SseClient(url, window)
        if mode == "pvws":
            return PvwsClient(url, window, name)
        return TangoGqlClient(url, window, name)

    async def connect() -> Client:
        async with gate:
            _, client = await asyncio.wait_for(
                loop.create_connection(make, parts.hostname, parts.port), CONNECT_TIMEOUT)
            await asyncio.wait_for(client.opened, CONNECT_TIMEOUT)
        return client

    t0 = time.monotonic()
    clients: list[Client] = list(await asyncio.gather(*(connect() for _ in range(count))))
    connected_s = time.monotonic() - t0
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), READY_TIMEOUT)
    except asyncio.TimeoutError:
        waiting = sum(not c.ready.done() for c in clients)
        raise RuntimeError(f"{waiting} of {count} clients had no event within "
                           f"{READY_TIMEOUT:.0f} s") from None
    window.start = time.time() + 1.0
    window.end = window.start + duration
    print(json.dumps({"start": window.start, "end": window.end}), flush=True)
    cpu0 = time.process_time()
    await asyncio.sleep(max(0.0, window.end - time.time()))
    cpu = time.process_time() - cpu0
    await asyncio.sleep(0.3)  # what arrives now is past the window, but tells of errors
    for client in clients:
        client.close()
    ordered = sorted(window.delays)
    per_client = sorted(c.counted for c in clients)
    stamps = sorted(window.stamps)
    # The source's rate from the time stamps themselves (a server that lags delivers, in the
    # window, events stamped over a longer span than the window)
    source_hz = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return {
        "deliveries": len(ordered), "seconds": duration, "clients": count,
        "connect_s": connected_s,
        "p50_ms": percentile(ordered, 50), "p90_ms": percentile(ordered, 90),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else float("nan"),
        "on_time": bisect.bisect_right(ordered, ON_TIME_MS),
        "source_events": len(stamps), "source_hz": source_hz,
        "per_client_min": per_client[0], "per_client_max": per_client[-1],
        "lost": [c.lost for c in clients if c.lost][:3],
        "lost_count": sum(1 for c in clients if c.lost),
        "problems": [p for c in clients for p in c.problems][:3],
        "problem_count": sum(c.problem_count for c in clients),
        "client_cpu": cpu / duration * 100,
    }


def main() -> int:
    mode, url, count, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    name = sys.argv[5] if len(sys.argv) > 5 else ""
    if mode not in ("sse", "pvws", "tangogql"):
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run(mode, url, count, duration, name))
    except Exception as exc:  # noqa: BLE001 - the reason goes to the suite
        print(f"{mode} clients failed: {exc!r}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
