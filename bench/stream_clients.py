"""Many stream clients on one asyncio loop, for the benches (bench/pvws_bench.py,
bench/suite_events_client.py): the connection, HTTP/SSE and WebSocket framing they share.

Each client is an ``asyncio.Protocol``: ``opened`` resolves once the server answered the request
(HTTP 200, or the WebSocket handshake), ``ready`` when the subclass says so (its first values),
and a failure before that fails both. Only what a measurement needs is parsed: a subclass gets
whole SSE messages (``messages``) or each text message of a WebSocket (``message``).
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Close, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri


class StreamClient(asyncio.Protocol, ABC):
    """What every client keeps: its futures, its transport, what went wrong."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.transport: Any = None
        self.counted = 0  # values received in the measured window
        self.problems: list[str] = []  # the first few unexpected messages
        self.problem_count = 0
        self.lost: str | None = None  # why the connection ended before we closed it
        self.closing = False

    def fail(self, why: str) -> None:
        for future in (self.opened, self.ready):
            if not future.done():
                future.set_exception(RuntimeError(why))
        if self.transport is not None:
            self.transport.close()

    def problem(self, what: str) -> None:
        self.problem_count += 1
        if len(self.problems) < 3:
            self.problems.append(what[:300])

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.lost = self.lost or f"connection lost: {exc!r}"
            self.fail(self.lost)


class SseClient(StreamClient):
    """An EventSource-like client: minimal HTTP/1.1 (the chunked framing is left in: its size
    lines sit between messages and never look like a message's line). ``messages(now, data,
    end)`` gets the received bytes up to ``end``, the end of the last whole message."""

    def __init__(self, netloc: str, path: str) -> None:
        super().__init__()
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\n"
                        "Accept: text/event-stream\r\n\r\n").encode()
        self.head: bytes | None = None
        self.rest = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        data = self.rest + data
        if self.head is None:
            cut = data.find(b"\r\n\r\n")
            if cut < 0:
                self.rest = data
                return
            self.head, data = data[:cut], data[cut + 2:]  # keep a "\r\n" before the body
            status = int(self.head.split(b" ", 2)[1])
            if status != 200:
                self.fail(f"event stream: HTTP {status} {data[:300]!r}")
                return
            self.opened.set_result(None)
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self.rest = data
            return
        self.rest = data[cut + 2:]
        self.messages(now, data, cut + 2)

    @abstractmethod
    def messages(self, now: float, data: bytes, end: int) -> None: ...


class WsClient(StreamClient):
    """A WebSocket client on the ``websockets`` package's sans-I/O protocol; ``opening()`` is
    what it sends once the handshake is answered, ``message()`` handles each text message."""

    subprotocols: list[Subprotocol] | None = None

    def __init__(self, url: str) -> None:
        super().__init__()
        self.ws = ClientProtocol(parse_uri(url), subprotocols=self.subprotocols, max_size=None)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self.flush()

    def flush(self) -> None:
        for data in self.ws.data_to_send():
            if self.transport.is_closing():
                return
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def send(self, message: dict[str, Any]) -> None:
        if self.ws.state is State.OPEN:  # not closed at once (read with the answer)
            self.ws.send_text(json.dumps(message).encode())

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self.handle(time.time())

    def eof_received(self) -> bool:
        self.ws.receive_eof()  # a refused handshake's answer may end only with the connection
        self.handle(time.time())
        return False

    def handle(self, now: float) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.handshake_exc is not None or event.status_code != 101:
                    self.fail(f"WebSocket handshake: HTTP {event.status_code} "
                              f"{bytes(event.body or b'')[:300]!r} {self.ws.handshake_exc!r}")
                    return
                self.opening()
            elif event.opcode is Opcode.TEXT:
                self.message(now, event.data)
            elif event.opcode is Opcode.CLOSE and not self.closing:
                self.lost = f"the server closed the WebSocket: {Close.parse(event.data)}"
        if self.ws.handshake_exc is not None and not self.opened.done():
            self.fail(f"WebSocket handshake: {self.ws.handshake_exc!r}")  # no HTTP answer at all
            return
        self.flush()

    @abstractmethod
    def opening(self) -> None: ...

    @abstractmethod
    def message(self, now: float, data: bytes) -> None: ...
