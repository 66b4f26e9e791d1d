"""``/pvws``: the pvws WebSocket protocol, so EPICS web displays attach by changing only the host.

- ``/pvws/pv`` (WebSocket): pvws's messages (``mtango.epics.pvws`` holds the protocol itself);
  every PV is a hub target ``("epics", name)``, so 200 sockets watching one PV hold one CA
  monitor per worker, shared with the SSE streams and reads.
- ``GET /pvws/info`` and ``GET /pvws/summary``: pvws's JSON pages (start time and runtime; one
  entry per socket of every worker), with our figures added.

Where we do better than pvws:

- ``connected``: ``false`` (with pvws's ``severity: UNDEFINED``) when a PV disconnects or has not
  connected within the connect timeout, and a full update with ``connected: true`` when it is back;
- at most ``pvws_max_rate_hz`` updates per PV per client (``?max_rate=`` may ask for fewer): the
  updates in between are coalesced, the latest value is always sent, never dropped; a client
  holds one waiting update per PV at most, whatever its socket does;
- a socket whose send fails is closed and all its PVs released (pvws kept such senders forever);
- ``write`` goes through the bridge's write permission and audit (the user of the upgrade
  request's credentials), as ``PUT /epics/rest/v1/pvs/{pv}/value``; with ``writes: off`` it is
  refused with an error message and nothing is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import platform
import time
from typing import Any

from sanic import Blueprint, Request
from sanic.exceptions import WebsocketClosed
from sanic.response import HTTPResponse
from websockets.protocol import State

from mtango import __version__
from mtango.api import sys as sys_api
from mtango.api.common import open_client, query_value, respond
from mtango.epics import pvws
from mtango.epics.convert import access_name
from mtango.epics.events import PvUpdate, epics_key
from mtango.errors import ApiError, bad_request
from mtango.live.hub import Event, Hub, Key
from mtango.security.guard import WriteTarget, audited_write
from mtango.shutdown import WS_REASON, WS_SERVICE_RESTART

log = logging.getLogger("mtango")

PREFIX = "/pvws"
MAX_PVS = 10000  # per socket, and per subscribe message
MAX_SHARED_DELTAS = 16  # deltas kept per event, each from another earlier event
_ids = itertools.count(1)
_STARTED = time.time()


# -- one event in pvws's form (made once, shared by every socket) ----------------------------------


def full_update(event: Event, writes: bool) -> dict[str, Any] | None:
    """The complete pvws update of a value event; None for a failure. ``writes``: the bridge
    writes (``writes: on``); a worker's setting, so one cached form per event is enough."""
    full: dict[str, Any] | None = event.encoded.get("pvws")
    if full is None and isinstance(event.data, PvUpdate):
        value, control = event.data.value, event.data.control
        meta, reading = value.meta, value.reading
        full = pvws.full_update(
            meta.name, meta.native_type, reading.data, reading.metadata,
            control.reading.metadata, labels=meta.labels or None,
            # pvws: readonly when the PV is, or when the server does not write: a display must
            # not offer what would be refused.
            writable=writes and access_name(meta.access) in ("READ_WRITE", "WRITE"),
            count=meta.native_count, long_string=meta.long_string)
        event.encoded["pvws"] = full
    return full


def full_text(event: Event, writes: bool) -> str:
    text: str | None = event.encoded.get("pvws-text")
    if text is None:
        text = event.encoded["pvws-text"] = json.dumps(full_update(event, writes))
    return text


def gone_text(event: Event, name: str) -> str:
    """The update of a failure event: the PV is not connected (or was refused)."""
    text: str | None = event.encoded.get("pvws-gone")
    if text is None:
        seconds, millis = divmod(event.time_ms, 1000)
        update = pvws.disconnected_update(name, (seconds, millis * 1_000_000))
        errors = event.body.get("errors") or []
        if errors:
            update["error"] = errors[0].get("description", "")
        text = event.encoded["pvws-gone"] = json.dumps(update)
    return text


class PvwsClient:
    """One WebSocket: the hub listener of its PVs, with what each PV's client-side state is."""

    def __init__(self, request: Request, interval: float) -> None:
        self.id = str(next(_ids))
        self.request = request  # the upgrade request: whose credentials a write uses
        self.writes = request.app.ctx.config.writes == "on"
        self.hub: Hub = request.app.ctx.hub
        self.epics = request.app.ctx.epics
        self.interval = interval  # seconds between two updates of one PV
        self.pvs: dict[str, Key] = {}  # the client's PVs, in the order it asked for them
        self.names: dict[Key, str] = {}
        self.state: dict[Key, dict[str, Any]] = {}  # what the client has merged so far
        self.seq: dict[Key, int] = {}  # the event whose full update equals ``state``
        self.pending: dict[Key, Event] = {}  # the latest event not sent yet, per PV
        self.next_at: dict[Key, float] = {}
        self.created = int(time.time() * 1000)
        self.last_client_message = 0
        self.last_message_sent = 0
        self.sent = 0
        self.coalesced = 0
        self.closed = False
        self.stopping = False  # ``end``: the worker stops
        self._wake = asyncio.Event()

    # -- the hub ---------------------------------------------------------------------------------

    def push(self, key: Key, event: Event) -> None:
        if key in self.pending:
            self.coalesced += 1
        self.pending[key] = event
        self._wake.set()

    def end(self) -> None:
        """The worker is stopping: the socket is closed with 1012 (service restart)."""
        self.stopping = True
        self.closed = True
        self._wake.set()

    def figures(self) -> dict[str, Any]:
        arrays = sum(1 for key in self.pvs.values()
                     if str(self.state.get(key, {}).get("vtype", "")).endswith("Array"))
        return {"stream": "pvws", "id": self.id, "created": self.created,
                "last_client_message": self.last_client_message,
                "last_message_sent": self.last_message_sent, "queued": len(self.pending),
                "pvs": len(self.pvs), "arrays": arrays, "sent": self.sent,
                "coalesced": self.coalesced}

    def mark_stale(self) -> None:
        """mTango subscriptions changed: nothing to do for a pvws socket."""

    # -- client messages -------------------------------------------------------------------------

    def subscribe(self, names: tuple[str, ...]) -> list[str]:
        """Watch ``names``; the error messages of the names refused."""
        errors = []
        new = [n for n in names if n not in self.pvs]
        if len(self.pvs) + len(new) > MAX_PVS:
            return [f"at most {MAX_PVS} PVs per socket; {len(self.pvs)} are subscribed"]
        for name in new:
            try:
                key = epics_key(self.epics.check(name))
            except ApiError as exc:
                errors.append(exc.entries[0].description)
                continue
            self.pvs[name] = key
            self.names[key] = name
            self.hub.listen(key, self)
            latest = self.hub.latest(key)
            if latest is not None:
                self.push(key, latest)
        return errors

    def clear(self, names: tuple[str, ...]) -> None:
        for name in names:
            key = self.pvs.pop(name, None)
            if key is None:
                continue
            self.hub.unlisten(key, self)
            for table in (self.names, self.state, self.seq, self.pending, self.next_at):
                table.pop(key, None)

    def close(self) -> None:
        self.closed = True
        self.clear(tuple(self.pvs))

    # -- sending ---------------------------------------------------------------------------------

    def message(self, key: Key, event: Event) -> str | None:
        """The text to send for ``event`` given what the client holds; None: nothing changed."""
        name = self.names[key]
        if event.error:
            self.state.pop(key, None)  # the next value is a full update again
            self.seq.pop(key, None)
            return gone_text(event, name)
        full = full_update(event, self.writes)
        if full is None:
            return None
        state = self.state.get(key)
        if state is None:
            self.state[key], self.seq[key] = full, event.seq
            return full_text(event, self.writes)
        base = self.seq.get(key)
        # Deltas are shared by the sockets that hold the same earlier event (most of them);
        # coalescing leaves sockets at a few different ones.
        deltas: dict[int | None, str | None] = event.encoded.setdefault("pvws-deltas", {})
        if base in deltas:
            text = deltas[base]
        else:
            delta = pvws.changes(state, full)
            text = json.dumps(delta) if delta is not None else None
            if base is not None and len(deltas) < MAX_SHARED_DELTAS:
                deltas[base] = text
        self.state[key], self.seq[key] = full, event.seq
        return text

    def due(self, now: float) -> tuple[list[str], float | None]:
        """The messages due now (one per PV at most per interval), and when the next is due."""
        out = []
        later: float | None = None
        for key in list(self.pending):
            at = self.next_at.get(key, now)
            if at > now:
                later = at if later is None else min(later, at)
                continue
            event = self.pending.pop(key)
            text = self.message(key, event)
            if text is not None:
                out.append(text)
                # The next slot follows this one's, not this send: a send made late (a busy
                # loop) must not push every later one back (measured: p50 78 ms instead of 53
                # at 100 sockets x 100 PVs x 10 Hz, and needless coalescing).
                self.next_at[key] = max(at, now - self.interval) + self.interval
        return out, later

    async def send_forever(self, ws: Any) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            while self.pending and not self.closed:
                out, later = self.due(time.monotonic())
                if out:
                    await send_texts(ws, out)
                    self.sent += len(out)
                    self.last_message_sent = int(time.time() * 1000)
                if later is not None and not out:
                    try:
                        await asyncio.wait_for(self._wake.wait(),
                                               max(0.0, later - time.monotonic()))
                    except asyncio.TimeoutError:
                        pass
                    self._wake.clear()
                elif later is None:
                    break


# What ``send_texts`` uses of Sanic's WebSocket object (sanic.server.websockets.impl).
SANIC_WS_NAMES = ("ws_proto", "io_proto", "conn_mutex")


async def send_texts(ws: Any, texts: list[str]) -> None:
    """Send ``texts`` as text frames, written to the socket at once.

    Sanic's ``ws.send`` takes its lock, frames the message and writes to the transport once per
    message: 100 sockets watching 100 PVs that change at 10 Hz took 88% of the worker's core for
    81,000 updates/s, where the SSE stream, which writes each batch at once, took 28% for 96,000
    (bench/pvws_bench.py). Here the frames are made by Sanic's own protocol object (websockets'
    sans-I/O ``Protocol``) under Sanic's lock, as ``ws.send`` does, and written together, with
    the transport's flow control. Without those names (another Sanic) it sends one by one;
    ``tests/test_pvws.py`` checks that they are there.
    """
    proto, io, lock = (getattr(ws, name, None) for name in SANIC_WS_NAMES)
    if proto is None or io is None or lock is None or len(texts) == 1:
        for text in texts:
            await ws.send(text)
        return
    async with lock:
        if proto.state is not State.OPEN:
            raise WebsocketClosed("the WebSocket is closed")
        for text in texts:
            proto.send_text(text.encode("utf-8"))
        chunks = proto.data_to_send()
        await io.send(b"".join(chunks))


def _interval(request: Request) -> float:
    """Seconds between two updates of one PV: ``pvws_max_rate_hz``, or ``?max_rate=`` below it."""
    limit: float = request.app.ctx.config.pvws_max_rate_hz
    raw = query_value(request, "max_rate")
    if raw is not None:
        try:
            asked = float(raw)
        except ValueError:
            asked = -1.0
        if not asked > 0 or asked != asked:
            raise bad_request(f"max_rate {raw!r} is not a positive number of updates per second",
                              "BadParameter")
        limit = min(limit, asked)
    return 1.0 / limit


async def _write(client: PvwsClient, ws: Any, name: str, value: Any) -> None:
    """pvws ``write``: the same path as ``PUT /epics/rest/v1/pvs/{pv}/value`` (permission, put
    with completion, audit, with the socket's user); pvws answers a success with nothing and a
    failure with an error message."""
    epics = client.epics
    try:
        target = WriteTarget("epics", epics.check(name), {"pv": name})
        await audited_write(client.request, "pvws", "pv", target,
                            lambda: epics.write(name, value, wait=True))
    except ApiError as exc:
        first = exc.entries[0]
        await ws.send(json.dumps(pvws.error_message(
            f"cannot write {name}: {first.description} ({first.reason}); nothing was written"
            if exc.status in (401, 403) else f"writing {name} failed: {first.description} "
            f"({first.reason})")))


async def _answer(client: PvwsClient, ws: Any, text: str | bytes) -> None:
    """Carry out one client frame."""
    client.last_client_message = int(time.time() * 1000)
    try:
        message = pvws.parse_message(text, MAX_PVS)
    except pvws.PvwsProtocolError as exc:
        await ws.send(json.dumps(pvws.error_message(exc.message)))
        return
    kind = message.type
    if kind == "subscribe":
        for error in client.subscribe(message.pvs):
            await ws.send(json.dumps(pvws.error_message(error)))
    elif kind == "clear":
        client.clear(message.pvs)
    elif kind == "list":
        await ws.send(json.dumps(pvws.list_message(client.pvs)))
    elif kind == "write":
        await _write(client, ws, str(message.pv), message.value)
    elif kind == "ping":
        await ws.ping()
    elif kind == "echo":
        await ws.send(text)


async def pv_socket(request: Request, ws: Any) -> None:
    try:
        interval = _interval(request)
    except ApiError as exc:  # the socket is open already: say why, then close it
        await ws.send(json.dumps(pvws.error_message(exc.entries[0].description)))
        await ws.close(1008, "bad max_rate")
        return
    client = PvwsClient(request, interval)
    with open_client(request, client):
        await _serve(client, ws)


async def _serve(client: PvwsClient, ws: Any) -> None:
    """Read the client's frames and answer them while a task sends its updates; until either
    side ends (a send that fails ends the socket: it is closed and forgotten)."""
    loop = asyncio.get_running_loop()
    sender = loop.create_task(client.send_forever(ws))
    receive: asyncio.Future[Any] | None = None
    try:
        while not client.closed and not sender.done():
            receive = loop.create_task(ws.recv())
            done, _ = await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                break  # sending failed: the socket is closed and forgotten
            text = receive.result()
            if text is None:
                break  # the client went away
            await _answer(client, ws, text)
    finally:
        client.close()
        if receive is not None:
            receive.cancel()
        sender.cancel()
        if client.stopping:
            # Not Sanic's 1001 (going away) after its graceful timeout: 1012 at once tells the
            # client to come back, as pvws clients (Display Builder, pvws.js) do after any close.
            with contextlib.suppress(WebsocketClosed, OSError):
                await ws.close(WS_SERVICE_RESTART, WS_REASON)
        if sender.done() and not sender.cancelled() and sender.exception() is not None:
            log.info("pvws socket %s closed: %s", client.id, sender.exception())


# -- the JSON pages --------------------------------------------------------------------------------


async def info(request: Request) -> HTTPResponse:
    """pvws's ``/info``: start time and runtime, plus what this bridge's pvws does."""
    config = request.app.ctx.config
    return respond(request, {
        "start_time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_STARTED)),
        "jre": f"{platform.python_implementation()} {platform.python_version()}",
        "server": f"mtango-bridge {__version__}",
        "pv_write_support": config.writes == "on",
        "max_rate_hz": config.pvws_max_rate_hz,
        "max_pvs_per_socket": MAX_PVS,
    })


async def summary(request: Request) -> HTTPResponse:
    """pvws's ``/summary``: one entry per socket (of every worker), and totals: clients, PVs,
    and the CA monitors (hub upstreams) they share."""
    upstreams, clients, _ = sys_api.live_snapshot(request)
    sockets = [c for c in clients if c.get("stream") == "pvws"]
    pvs = [u for u in upstreams if u["target"].get("system") == "epics"]
    return respond(request, {
        "sockets": sockets,
        "clients": len(sockets),
        "pvs": sum(s["pvs"] for s in sockets),
        "subscriptions": len(pvs),
        "listeners": sum(u["listeners"] for u in pvs),
    })


def blueprint() -> Blueprint:
    bp = Blueprint("pvws", url_prefix=PREFIX, strict_slashes=False)
    bp.add_websocket_route(pv_socket, "/pv", name="pvws_pv")
    bp.add_route(info, "/info", methods=["GET"], name="pvws_info")
    bp.add_route(summary, "/summary", methods=["GET"], name="pvws_summary")
    return bp
