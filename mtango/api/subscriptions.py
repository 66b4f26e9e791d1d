"""``/tango/subscriptions``: mTango subscriptions over Server-Sent Events (as the Java server).

- ``POST /tango/subscriptions`` [targets]: ``{id, events: [{id, target}], failures}``;
- ``GET /tango/subscriptions/{id}``: the same;
- ``PUT /tango/subscriptions/{id}`` targets: the events of those targets ``[{id, target}]``;
- ``DELETE /tango/subscriptions/{id}`` [event ids]: with ids, those events removed; without a
  body, the subscription cancelled and its stream ended;
- ``GET /tango/subscriptions/{id}/event-stream``: ``text/event-stream`` of every event.

A target is ``{host: "h:port", device, attribute, type}``, echoed exactly as sent (the waltz
client finds its events by comparing targets). Subscriptions are shared by the workers through
``mtango.live.subscriptions``; the stream's values come from this worker's hub.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from mtango import jsonenc
from mtango.api.common import (
    check_name,
    device_name,
    event_stream_response,
    json_body,
    open_client,
    respond,
)
from mtango.errors import ApiError, ErrorEntry, FailureKind, bad_request, not_found
from mtango.live.hub import ClientQueue, Event, Hub, Key
from mtango.live.subscriptions import Subscription, SubscriptionStore, public
from mtango.shutdown import SSE_RECONNECT
from mtango.tango.events import check_event_type, tango_key

PREFIX = "/tango/subscriptions"
# What EventSource waits before reconnecting (ms); the Java server's "retry: 30" was meant as s.
RETRY_MS = 3000
# Bounds on what clients can make the bridge keep: targets per request, subscriptions in all
# (each is a small file of the run directory; idle ones go after subscription_idle_s).
MAX_TARGETS = 1000
MAX_SUBSCRIPTIONS = 10000


def _store(request: Request) -> SubscriptionStore:
    return request.app.ctx.subscriptions


def _sub_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise not_found(f"no subscription {raw!r}", "SubscriptionNotFound")
    return int(raw)


def _existing(request: Request, raw: str) -> Subscription:
    sub = _store(request).get(_sub_id(raw))
    if sub is None:
        raise not_found(f"no subscription {raw}", "SubscriptionNotFound")
    return sub


def _targets(request: Request, required: bool) -> list[Any]:
    if not request.body.strip():
        if required:
            raise bad_request("give the targets as a JSON array of {host, device, attribute, "
                              "type}", "MissingBody")
        return []
    body = json_body(request)
    if not isinstance(body, list):
        raise bad_request("the body must be a JSON array of targets", "BadBody")
    if len(body) > MAX_TARGETS:
        raise bad_request(f"at most {MAX_TARGETS} targets per request", "TooManyTargets")
    return body


def target_key(request: Request, target: Any) -> Key:
    """The hub key of a target as sent by a client; ApiError (400/403) when it is not valid."""
    if not isinstance(target, dict):
        raise bad_request("a target is {host, device, attribute, type}", "BadTarget")
    fields: dict[str, str] = {}
    for name in ("host", "device", "attribute", "type"):
        value = target.get(name)
        if not isinstance(value, str) or not value:
            raise bad_request("a target needs host ('name:port'), device, attribute and type, "
                              "all strings", "BadTarget")
        fields[name] = value
    host, _, port = fields["host"].rpartition(":")
    host_key = request.app.ctx.tango.host_key(host, port)
    parts = fields["device"].split("/")
    if len(parts) != 3:
        raise bad_request(f"device {fields['device']!r} is not domain/family/member", "BadName")
    device = device_name(*parts)
    check_name(fields["attribute"], "attribute")
    return tango_key(host_key, device, fields["attribute"], check_event_type(fields["type"]))


async def _check(request: Request, target: Any) -> tuple[dict[str, Any] | None, Any]:
    """(the target as it will be echoed, None) or (None, failure item)."""
    try:
        key = target_key(request, target)
        try:
            await request.app.ctx.tango.attribute_info(key[1], target["device"],
                                                        target["attribute"])
        except ApiError as exc:
            if exc.kind is not FailureKind.UNAVAILABLE:
                raise
            # The device is away: subscribe anyway, values flow when it is back.
    except ApiError as exc:
        return None, {"target": target, "errors": [e.as_dict() for e in exc.entries]}
    return {k: target[k] for k in ("host", "device", "attribute", "type")}, None


async def _sorted(request: Request, raw: list[Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    checked = await asyncio.gather(*(_check(request, t) for t in raw))
    return [t for t, _ in checked if t is not None], [f for _, f in checked if f is not None]


async def create(request: Request) -> HTTPResponse:
    raw = _targets(request, required=False)
    if _store(request).count() >= MAX_SUBSCRIPTIONS:
        raise ApiError(ErrorEntry(
            "TooManySubscriptions", f"the bridge holds {MAX_SUBSCRIPTIONS} subscriptions "
            "already; unused ones go after subscription_idle_s", "ERR", "Subscriptions"),
            status=503)
    targets, failures = await _sorted(request, raw)
    sub = _store(request).create(targets, failures)
    return respond(request, public(sub))


async def show(request: Request, sub_id: str) -> HTTPResponse:
    return respond(request, public(_existing(request, sub_id)))


async def extend(request: Request, sub_id: str) -> HTTPResponse:
    number = _existing(request, sub_id)["id"]
    targets, failures = await _sorted(request, _targets(request, required=True))
    added = _store(request).add(number, targets, failures)
    if added is None:
        raise not_found(f"no subscription {sub_id}", "SubscriptionNotFound")
    return respond(request, added)


async def delete(request: Request, sub_id: str) -> HTTPResponse:
    number = _existing(request, sub_id)["id"]
    if not request.body.strip():
        _store(request).cancel(number)
        return HTTPResponse(status=204)
    ids = json_body(request)
    if not isinstance(ids, list) or not all(type(i) is int for i in ids):
        raise bad_request("the body must be a JSON array of event ids", "BadBody")
    sub = _store(request).remove(number, set(ids))
    if sub is None:
        raise not_found(f"no subscription {sub_id}", "SubscriptionNotFound")
    return respond(request, public(sub))


async def subscription(request: Request, sub_id: str) -> HTTPResponse:
    handler = {"GET": show, "PUT": extend, "DELETE": delete}[request.method]
    return await handler(request, sub_id)


# -- the event stream ------------------------------------------------------------------------------


def sse_data(event: Event) -> str:
    """The ``data:`` line of an event, made once and shared by every stream that sends it (1000
    streams of a 1000-element spectrum would otherwise serialize it 1000 times)."""
    data: str | None = event.encoded.get("sse")
    if data is None:
        if event.error:
            first = event.body["errors"][0]
            reason, description = first["reason"], " ".join(str(first["description"]).split())
            data = f"data: error: {reason}: {description}\n\n"
        else:
            data = f"data: {jsonenc.dumps(event.body['value'])}\n\n"
        event.encoded["sse"] = data
    return data


def sse_message(event_ids: list[int], event: Event) -> str:
    """The SSE text of one hub event for each of the subscription's event ids it feeds."""
    data = sse_data(event)
    return "".join(f"id: {event.time_ms}\nevent: {i}\n{data}" for i in event_ids)


class EventStream:
    """One open ``event-stream`` response: the hub listener of every target of a subscription."""

    def __init__(self, request: Request, sub: Subscription) -> None:
        self.request = request
        self.sub_id: int = sub["id"]
        self.hub: Hub = request.app.ctx.hub
        config = request.app.ctx.config
        self.queue = ClientQueue(config.events_queue_size, self.hub.stats)
        self.heartbeat = min(config.sse_heartbeat_s, config.subscription_idle_s / 3)
        self.keys: dict[Key, list[int]] = {}
        self.stale = False  # some subscription's file changed: see whether this one did
        self.version: int | None = None  # of the file last loaded; None: the first change reloads
        self._load(sub)

    def _load(self, sub: Subscription) -> list[Key]:
        """Listen to the targets of ``sub`` (and no others); the keys listened to anew."""
        wanted: dict[Key, list[int]] = {}
        for event in sub["events"]:
            try:
                key = target_key(self.request, event["target"])
            except ApiError:
                continue  # no longer allowed (the configuration changed): nothing to send
            wanted.setdefault(key, []).append(event["id"])
        for key in self.keys.keys() - wanted.keys():
            self.hub.unlisten(key, self.queue)
        added = [key for key in wanted if key not in self.keys]
        for key in added:
            self.hub.listen(key, self.queue)
        self.keys = wanted
        return added

    def latest(self, keys: list[Key]) -> str:
        out = []
        for key in keys:
            event = self.hub.latest(key)
            if event is not None:
                out.append(sse_message(self.keys[key], event))
        return "".join(out)

    def figures(self) -> dict[str, Any]:
        return {"stream": "subscription", "subscription": self.sub_id, "targets": len(self.keys),
                "queued": len(self.queue), "coalesced": self.queue.coalesced}

    def mark_stale(self) -> None:
        """Subscriptions changed on disk (the worker's upkeep saw it): reload this one."""
        self.stale = True
        self.queue.wake()

    def end(self) -> None:
        """The worker is stopping: the stream sends its final event and ends."""
        self.queue.end()

    def close(self) -> None:
        for key in self.keys:
            self.hub.unlisten(key, self.queue)
        self.keys = {}

    async def run(self, response: Any, store: SubscriptionStore) -> None:
        store.touch(self.sub_id)
        await response.send(f"retry: {RETRY_MS}\n\n" + self.latest(list(self.keys)))
        next_beat = time.monotonic() + self.heartbeat
        while True:
            batch = await self.queue.take(max(0.0, next_beat - time.monotonic()))
            if self.queue.ended:
                # The worker is stopping: the client reconnects (it will find the subscription
                # gone if another replica answers, and make a new one, as waltz does).
                await response.send(SSE_RECONNECT)
                return
            out = []
            if self.stale:
                self.stale = False
                # Any subscription's change marks every stream stale; its own file says
                # whether this one changed (a stat, not a read and parse, for the others).
                version = store.version(self.sub_id)
                if version is None:
                    return  # cancelled (DELETE) or swept: the stream ends
                if version != self.version:
                    self.version = version
                    sub = store.get(self.sub_id)
                    if sub is None:
                        return
                    out.append(self.latest(self._load(sub)))
            for key, event in batch:
                ids = self.keys.get(key)
                if ids:
                    out.append(sse_message(ids, event))
            if time.monotonic() >= next_beat:
                out.append("event: maintenance\ndata: heartbeat\n\n")
                store.touch(self.sub_id)
                next_beat = time.monotonic() + self.heartbeat
            text = "".join(out)
            if text:
                await response.send(text)


async def event_stream(request: Request, sub_id: str) -> HTTPResponse | None:
    sub = _existing(request, sub_id)
    store = _store(request)
    stream = EventStream(request, sub)
    try:
        with open_client(request, stream):
            response = await event_stream_response(request)
            await stream.run(response, store)
            await response.eof()
    finally:
        store.touch(sub["id"])  # its idle time starts now
    return None


def blueprint() -> Blueprint:
    bp = Blueprint("subscriptions", url_prefix=PREFIX, strict_slashes=False)
    bp.add_route(create, "", methods=["POST"], name="subscriptions_create")
    # One route for the three methods of one URL, so that another method's 405 names them all.
    bp.add_route(subscription, "/<sub_id>", methods=["GET", "PUT", "DELETE"],
                 name="subscription")
    bp.add_route(event_stream, "/<sub_id>/event-stream", methods=["GET"],
                 name="subscription_stream")
    return bp

