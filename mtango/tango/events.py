"""Tango upstreams of the subscription hub: Tango events, or the bridge's own polling.

For each target ``("tango", host, device, attribute, event)`` the hub asks ``TangoEvents.start``;
this module then, off the event loop (in the backend's thread pool, within the device's share):

1. looks the attribute up (its canonical name and enum labels; an unknown one is an error
   event, retried later as Tango would: a device may gain it after an Init);
2. subscribes to the Tango event (``subscribe_event``). Values and failures arrive on Tango's
   threads, are turned into plain value objects there, and reach the loop through the worker's
   ``Handoff``;
3. when the attribute has no such event (not polled by Tango, no change criteria, no pushing
   code), falls back, for ``change``, ``archive`` and ``periodic``, to polling it itself every
   ``tango_poll_ms``: one ``read_attributes`` per device and period for all its polled targets,
   emitting only changes (or every period for ``periodic``);
4. when the device cannot be reached, subscribes *stateless*: Tango retries by itself every
   10 s and sends failure events meanwhile, and values flow again when the device is back.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import tango

from mtango import jsonenc
from mtango.errors import (
    ApiError,
    ErrorEntry,
    FailureKind,
    bad_request,
    entries_from_devfailed,
    failure_body,
)
from mtango.live.handoff import Handoff
from mtango.live.hub import Event, Hub, Key, Upstream
from mtango.tango import convert

log = logging.getLogger("mtango")

EVENT_TYPES = {
    "change": tango.EventType.CHANGE_EVENT,
    "periodic": tango.EventType.PERIODIC_EVENT,
    "archive": tango.EventType.ARCHIVE_EVENT,
    "user": tango.EventType.USER_EVENT,
}
# Event types the bridge can stand in for by polling (a user event exists only when code pushes).
POLLABLE = {"change", "archive", "periodic"}
# Reasons Tango gives when an attribute simply has no such event: nothing polls it and no code
# pushes it, or it is polled without change criteria. The bridge then polls it itself.
NO_EVENT_REASONS = frozenset({
    "API_AttributePollingNotStarted",
    "API_EventPropertiesNotSet",
    "API_AttributeNotDataReadyEnabled",
})
# How long to wait before trying again to look up or subscribe to a target that failed.
RETRY_S = 5.0


def tango_key(host: str, device: str, attribute: str, event: str) -> Key:
    return ("tango", host, device.lower(), attribute.lower(), event)


def _parts(key: Key) -> tuple[str, str, str, str]:
    """Host, device, attribute and event type of a Tango key."""
    _, host, device, attribute, event = key
    return str(host), str(device), str(attribute), str(event)


def check_event_type(event: str) -> str:
    """An event type a client named: one of EVENT_TYPES, else 400 (the Java server's text)."""
    if event not in EVENT_TYPES:
        raise bad_request(f"Unsupported event: {event} (use one of {', '.join(EVENT_TYPES)})",
                          "UnsupportedEvent")
    return event


def error_event(entries: list[ErrorEntry], name: str) -> Event:
    return Event(failure_body(entries, name=name), int(time.time() * 1000))


class _State:
    """What the source keeps for one upstream."""

    __slots__ = ("task", "waiting", "event_id", "proxy", "name", "labels", "poller", "signature",
                 "no_event")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.waiting = False  # the task sleeps before a retry (it may be cancelled then)
        self.event_id: int | None = None
        self.proxy: Any = None
        self.name = ""
        self.labels: list[str] = []
        self.poller: _DevicePoller | None = None
        self.signature: Any = None  # (value JSON, quality) or error reasons of the last poll
        self.no_event = False  # a stateless subscription found the attribute has no such event


def _detached_task(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Start ``coroutine`` as a task with a context of its own, not its caller's.

    ``create_task(context=...)`` needs Python 3.11; a task copies the context it is created in,
    so creating it inside an empty context does the same on 3.10.
    """
    return contextvars.Context().run(asyncio.get_running_loop().create_task, coroutine)


class TangoEvents:
    """The hub's source for Tango targets."""

    keeps_recent = True  # rc3 long polling's ``last=`` answers the events since a time

    def __init__(self, backend: Any, handoff: Handoff, poll_ms: int) -> None:
        self.backend = backend
        self.handoff = handoff
        self.period = poll_ms / 1000
        self.hub: Hub | None = None
        self._pollers: dict[tuple[str, str], _DevicePoller] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # subscribing and unsubscribing

    def bind(self, hub: Hub) -> None:
        self.hub = hub

    # -- Source ----------------------------------------------------------------------------------

    def start(self, upstream: Upstream) -> None:
        state = upstream.source_state = _State()
        state.task = self._spawn(self._run(upstream))

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        # A context of its own: the task must not inherit the deadline of the request that
        # happened to start it.
        task = _detached_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def stop(self, upstream: Upstream) -> None:
        state: _State = upstream.source_state
        if state.task is not None and state.waiting:
            # Only while it waits: cancelled during a call, the call's thread would still make
            # the subscription, and nobody would be left to cancel it. Otherwise the task sees
            # ``upstream.closed`` after its call and undoes what the call did.
            state.task.cancel()
        self._unpoll(upstream)
        if state.event_id is not None:
            self._unsubscribe(upstream, state)

    def close(self) -> None:
        """Cancel every task of this source (the worker stops)."""
        for task in self._tasks:
            task.cancel()
        for poller in self._pollers.values():
            if poller.task is not None:
                poller.task.cancel()
        self._pollers.clear()

    def describe(self, key: Key) -> dict[str, Any]:
        _, host, device, attribute, event = key
        return {"system": "tango", "host": host, "device": device, "attribute": attribute,
                "event": event}

    # -- subscribing -----------------------------------------------------------------------------

    async def _run(self, upstream: Upstream) -> None:
        host, device, attribute, event = _parts(upstream.key)
        state: _State = upstream.source_state
        while not upstream.closed:
            self.backend.begin_request()  # one deadline per attempt
            try:
                info = await self.backend.attribute_info(host, device, attribute)
                state.name = info["name"]
                state.labels = info["enum_label"] if info["data_type"] == "DevEnum" else []
                state.proxy = await self.backend.proxy(host, device)
                if upstream.closed:
                    return
                upstream.mode = "subscribing"
                try:
                    state.event_id = await self._subscribe(upstream, state, stateless=False)
                    upstream.mode = event
                    upstream.pushes_changes = event == "change"
                    return
                except ApiError as exc:
                    if {e.reason for e in exc.entries} & NO_EVENT_REASONS:
                        if event not in POLLABLE:
                            raise
                        if not upstream.closed:
                            self._poll(upstream)
                        return
                    if exc.kind is not FailureKind.UNAVAILABLE:
                        raise
                    away = exc.entries
                # The device went away between the look-up and the subscription: let Tango
                # retry by itself (failure events until it is back).
                self._publish(upstream, error_event(away, state.name or attribute))
                state.event_id = await self._subscribe(upstream, state, stateless=True)
                if state.no_event:  # its first event, inside the call, said so
                    self._to_polling(upstream)
                    return
                upstream.mode = event
                upstream.pushes_changes = event == "change"
                return
            except ApiError as exc:
                upstream.mode = "retrying"
                self._publish(upstream, error_event(exc.entries, state.name or attribute))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not end the retries silently
                log.exception("subscribing to %r failed", upstream.key)
                upstream.mode = "retrying"
                self._publish(upstream, error_event(
                    [ErrorEntry(type(exc).__name__, str(exc), "ERR", "TangoEvents")], attribute))
            if upstream.closed:
                return
            state.waiting = True
            try:
                await asyncio.sleep(RETRY_S)
            finally:
                state.waiting = False

    async def _subscribe(self, upstream: Upstream, state: _State, stateless: bool) -> int | None:
        host, device, _, event = _parts(upstream.key)
        callback = self._callback(upstream, state)
        # SyncRead: fail at once when the attribute has no such event (then the bridge polls);
        # Stateless: succeed whatever happens, Tango retrying every 10 s (measured, PyTango 10.3).
        mode = tango.EventSubMode.Stateless if stateless else tango.EventSubMode.SyncRead
        event_id: int = await self.backend.call(
            (host, device), state.proxy.subscribe_event, state.name, EVENT_TYPES[event],
            callback, mode,
        )
        if upstream.closed:  # dropped while subscribing
            self._unsubscribe(upstream, state, event_id)
            return None
        return event_id

    def _callback(self, upstream: Upstream, state: _State) -> Callable[[Any], None]:
        """The function Tango calls, on its own threads, for every event of this subscription."""

        def received(data: Any) -> None:
            try:
                if data.err:
                    entries = entries_from_devfailed(tango.DevFailed(*data.errors))
                    event = error_event(entries, state.name)
                else:
                    body = convert.value_object(data.attr_value, state.labels)
                    event = Event(body, body.get("timestamp") or int(time.time() * 1000))
            except Exception as exc:  # never let an exception escape into Tango's thread
                event = error_event(
                    [ErrorEntry(type(exc).__name__, str(exc), "ERR", "TangoEvents")], state.name)
            self.handoff.post(self._received, upstream, event)

        return received

    def _received(self, upstream: Upstream, event: Event) -> None:
        if event.error and upstream.key[4] in POLLABLE:
            reasons = {e["reason"] for e in event.body["errors"]}
            if reasons & NO_EVENT_REASONS:
                # A stateless subscription made while the device was away: now that it is
                # back, it turns out to have no such event. Poll instead.
                state: _State = upstream.source_state
                if state.event_id is None:
                    state.no_event = True  # still inside subscribe_event: _run switches
                elif upstream.mode != "poll":
                    self._to_polling(upstream)
                return
        self._publish(upstream, event)

    def _to_polling(self, upstream: Upstream) -> None:
        state: _State = upstream.source_state
        if state.event_id is not None:
            self._unsubscribe(upstream, state)
        upstream.pushes_changes = False
        if not upstream.closed:
            self._poll(upstream)

    def _unsubscribe(self, upstream: Upstream, state: _State, event_id: int | None = None) -> None:
        event_id = state.event_id if event_id is None else event_id
        state.event_id = None
        proxy = state.proxy
        _, host, device = upstream.key[:3]

        async def unsubscribe() -> None:
            self.backend.begin_request()
            try:
                await self.backend.call((host, device), proxy.unsubscribe_event, event_id)
            except ApiError as exc:
                log.info("unsubscribing from %r: %s", upstream.key, exc)

        self._spawn(unsubscribe())

    def _publish(self, upstream: Upstream, event: Event) -> None:
        if self.hub is not None:
            self.hub.publish(upstream, event)

    # -- the bridge's own polling ----------------------------------------------------------------

    def _poll(self, upstream: Upstream) -> None:
        state: _State = upstream.source_state
        upstream.mode = "poll"
        host, device = str(upstream.key[1]), str(upstream.key[2])
        poller = self._pollers.get((host, device))
        if poller is None:
            poller = self._pollers[(host, device)] = _DevicePoller(self, host, device)
        state.poller = poller
        poller.add(upstream)

    def _unpoll(self, upstream: Upstream) -> None:
        state: _State = upstream.source_state
        poller, state.poller = state.poller, None
        if poller is not None and poller.remove(upstream):
            self._pollers.pop((poller.host, poller.device), None)

    def polled(self, upstream: Upstream, item: dict[str, Any]) -> None:
        """A poll's result for ``upstream``: published when it differs from the last one."""
        state: _State = upstream.source_state
        if "errors" in item:
            signature: Any = tuple(e["reason"] for e in item["errors"])
            event = Event(item, int(time.time() * 1000))
        else:
            signature = (jsonenc.dumps(item["value"]), item["quality"])
            event = Event(item, item["timestamp"])
        if signature == state.signature and upstream.key[4] != "periodic":
            upstream.confirmed = time.monotonic()  # unchanged, and known to be so as of now
            return
        state.signature = signature
        self._publish(upstream, event)


class _DevicePoller:
    """Reads every polled attribute of one device in one call, every period."""

    def __init__(self, source: TangoEvents, host: str, device: str) -> None:
        self.source = source
        self.host, self.device = host, device
        self.upstreams: dict[str, list[Upstream]] = {}  # by canonical attribute name
        self.task: asyncio.Task[None] | None = None

    def add(self, upstream: Upstream) -> None:
        name = upstream.source_state.name
        self.upstreams.setdefault(name, []).append(upstream)
        if self.task is None:
            # Not the context of the request that happened to add the first attribute either.
            self.task = _detached_task(self._run())
        # The newcomer's first value comes with the next poll; its listeners want one now.
        upstream.source_state.signature = None

    def remove(self, upstream: Upstream) -> bool:
        """Forget ``upstream``; True when the device has nothing left to poll."""
        name = upstream.source_state.name
        group = self.upstreams.get(name, [])
        if upstream in group:
            group.remove(upstream)
        if not group:
            self.upstreams.pop(name, None)
        if not self.upstreams and self.task is not None:
            self.task.cancel()
            self.task = None
            return True
        return False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backend = self.source.backend
        while self.upstreams:
            started = loop.time()
            names = list(self.upstreams)
            backend.begin_request()
            try:
                items = await backend.read_attributes(self.host, self.device, names)
            except ApiError as exc:
                items = [failure_body(exc.entries, name=n) for n in names]
            for name, item in zip(names, items, strict=True):
                for upstream in tuple(self.upstreams.get(name, ())):
                    self.source.polled(upstream, item)
            await asyncio.sleep(max(0.0, self.source.period - (loop.time() - started)))
