"""``/live/stream``: one Server-Sent Events stream for any mix of Tango attributes and EPICS PVs.

``GET /live/stream?tango=HOST:PORT/domain/family/member/attribute&pv=NAME...`` (each repeatable;
``type`` names the Tango event type, ``change`` by default). Browsers open at most six HTTP/1.1
connections per origin, so a page shows every value it watches through this one stream. Each
message is one target's event::

    id: <worker>-<n>
    data: {"target": "<as given>", "kind": "tango"|"pv", "first": true, "connected": true,
           "value": {...}}

- ``value`` is the value object of the read APIs: rc3's ``{name, value, quality, timestamp}`` for
  Tango, ``GET /epics/rest/v1/pvs/{pv}/value``'s object for a PV; a target's first message
  (``first: true``) carries everything the read API's full object has (for a PV: units, limits,
  precision, enum labels, access).
- ``connected: false`` with ``error`` (the FAILURE body) when the source is gone or in error: a
  disconnected IOC, a PV that never connected, a dead device server. The next value says
  ``connected: true`` again, as a first message (metadata may have changed meanwhile).
- A client that reconnects (EventSource does by itself, after ``retry``) with ``Last-Event-ID``
  gets at once the latest message of every target that changed since that id, as a first
  message; a new client gets the latest of every target the worker already watches.

Targets share the hub's upstreams (one Tango subscription, one CA monitor per target and worker)
with the mTango subscriptions, long polls and pvws sockets. A client that stops reading fills only
its own bounded queue, which keeps the latest event per target (``mtango.live.hub.ClientQueue``).
"""

from __future__ import annotations

import time
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from mtango import jsonenc
from mtango.api.common import (
    check_name,
    device_name,
    event_stream_response,
    open_client,
    query_list,
    query_value,
)
from mtango.epics import convert as epics_convert
from mtango.epics.events import PvUpdate, epics_key
from mtango.errors import bad_request
from mtango.live.hub import ClientQueue, Event, Hub, Key
from mtango.shutdown import SSE_RECONNECT
from mtango.tango.events import check_event_type, tango_key

PREFIX = "/live"
RETRY_MS = 3000
MAX_TARGETS = 1000
HEARTBEAT = ": heartbeat\n\n"  # an SSE comment: keeps proxies from closing an idle stream


def tango_target(request: Request, text: str, event: str) -> Key:
    """``HOST:PORT/domain/family/member/attribute`` as a hub key; 400/403 when not valid."""
    parts = text.split("/")
    if len(parts) != 5 or ":" not in parts[0]:
        raise bad_request(f"Tango target {text!r} is not HOST:PORT/domain/family/member/"
                          "attribute", "BadTarget")
    host, _, port = parts[0].rpartition(":")
    host_key = request.app.ctx.tango.host_key(host, port)
    device = device_name(*parts[1:4])
    check_name(parts[4], "attribute")
    return tango_key(host_key, device, parts[4], event)


def targets(request: Request) -> list[tuple[str, str, Key]]:
    """(kind, target as given, hub key) of every target of the request, in order, once each."""
    event = check_event_type(query_value(request, "type") or "change")
    found: dict[tuple[str, str], Key] = {}
    for text in query_list(request, "tango"):
        found[("tango", text)] = tango_target(request, text, event)
    epics = request.app.ctx.epics
    for name in query_list(request, "pv"):
        found[("pv", name)] = epics_key(epics.check(name))
    if not found:
        raise bad_request("name what to watch: ?tango=HOST:PORT/domain/family/member/attribute "
                          "and/or ?pv=NAME (each repeatable)", "MissingParameter")
    if len(found) > MAX_TARGETS:
        raise bad_request(f"{len(found)} targets; at most {MAX_TARGETS} per stream",
                          "TooManyTargets")
    return [(kind, text, key) for (kind, text), key in found.items()]


def _payload(event: Event, kind: str, first: bool) -> str:
    """The JSON of an event after its ``target`` (``"kind": ...}``), made once per event."""
    slot = "live-first" if first else "live"
    text: str | None = event.encoded.get(slot)
    if text is None:
        if event.error:
            body: dict[str, Any] = {"kind": kind, "first": first, "connected": False,
                                    "error": event.body}
        else:
            value = event.body
            if first and isinstance(event.data, PvUpdate):
                info = epics_convert.info_body(event.data.control)
                value = epics_convert.full_object(value, info)
            body = {"kind": kind, "first": first, "connected": True, "value": value}
        text = jsonenc.dumps(body)[1:]
        event.encoded[slot] = text
    return text


class LiveStream:
    """One open stream: the hub listener of its targets."""

    def __init__(self, request: Request, wanted: list[tuple[str, str, Key]]) -> None:
        self.hub: Hub = request.app.ctx.hub
        config = request.app.ctx.config
        self.queue = ClientQueue(config.events_queue_size, self.hub.stats)
        self.heartbeat = config.sse_heartbeat_s
        self.targets: dict[Key, list[tuple[str, str]]] = {}
        for kind, text, key in wanted:
            self.targets.setdefault(key, []).append((kind, jsonenc.dumps(text)))
        self.sent: set[Key] = set()  # targets whose first message went out

    def figures(self) -> dict[str, Any]:
        return {"stream": "live", "targets": len(self.targets), "queued": len(self.queue),
                "coalesced": self.queue.coalesced}

    def mark_stale(self) -> None:
        """mTango subscriptions changed: nothing to do for this stream."""

    def end(self) -> None:
        """The worker is stopping: the stream sends its final event and ends."""
        self.queue.end()

    def message(self, key: Key, event: Event) -> str:
        first = key not in self.sent
        if event.error:
            self.sent.discard(key)  # the next value says everything again (it may have changed)
        else:
            self.sent.add(key)
        head = f"id: {self.hub.instance}-{event.seq}\n"
        return "".join(f'{head}data: {{"target":{target},{_payload(event, kind, first)}\n\n'
                       for kind, target in self.targets[key])

    def start(self, last_event_id: str | None) -> str:
        """Listen to every target; the text that opens the stream (latest values)."""
        seen = 0
        if last_event_id:
            instance, _, number = last_event_id.partition("-")
            if instance == self.hub.instance and number.isdigit():
                seen = int(number)
        latest = []
        for key in self.targets:
            self.hub.listen(key, self.queue)
            event = self.hub.latest(key)
            if event is not None and event.seq > seen:
                latest.append((key, event))
            elif event is not None:
                self.sent.add(key)  # the client has it already
        return f"retry: {RETRY_MS}\n\n" + self.messages(latest)

    def messages(self, batch: list[tuple[Key, Event]]) -> str:
        """Messages in the order of the events' numbers, so that a client's last id is never
        above one it did not get (a queue that coalesced may hand them over out of order)."""
        batch.sort(key=lambda item: item[1].seq)
        return "".join(self.message(key, event) for key, event in batch if key in self.targets)

    def close(self) -> None:
        for key in self.targets:
            self.hub.unlisten(key, self.queue)

    async def run(self, response: Any, opening: str) -> None:
        await response.send(opening)
        next_beat = time.monotonic() + self.heartbeat
        while True:
            batch = await self.queue.take(max(0.0, next_beat - time.monotonic()))
            if self.queue.ended:
                # The worker is stopping: the client reconnects with its Last-Event-ID and gets
                # the latest value of every target at once (here restarted, or elsewhere).
                await response.send(SSE_RECONNECT)
                return
            out = [self.messages(batch)]
            if time.monotonic() >= next_beat:
                out.append(HEARTBEAT)
                next_beat = time.monotonic() + self.heartbeat
            text = "".join(out)
            if text:
                await response.send(text)


async def live_stream(request: Request) -> HTTPResponse | None:
    wanted = targets(request)
    stream = LiveStream(request, wanted)
    last = request.headers.get("last-event-id") or query_value(request, "last_event_id")
    with open_client(request, stream):
        opening = stream.start(last)
        response = await event_stream_response(request)
        await stream.run(response, opening)
        await response.eof()
    return None


def blueprint() -> Blueprint:
    bp = Blueprint("live", url_prefix=PREFIX, strict_slashes=False)
    bp.add_route(live_stream, "/stream", methods=["GET"], name="live_stream")
    return bp
