"""The subscription hub: one upstream subscription per target and worker, shared by everyone.

A *target* is what a client watches: a Tango attribute with an event type, or an EPICS PV.
Long polls, event streams, WebSockets, value reads and the web page all ask the hub; whoever
asks first makes the hub start the target's upstream (through the *source* of its kind, e.g.
``mtango.tango.events``), everyone after shares it. No HTTP in here: consumers are *listeners*,
anything with a ``push(key, event)`` method, usually a ``ClientQueue``.

- Events arrive from the sources on the event loop (sources use ``mtango.live.handoff``) and are
  fanned out to every listener's queue without waiting on any of them: a client that stops
  reading only fills its own bounded queue.
- An upstream nobody listens to any more is kept for ``linger`` seconds, so a page that reloads
  finds its subscription still there; then the source is told to stop.
- The latest event is kept per target, for first values and reads served from events; about
  30 s of recent ones too for the targets of sources that ask for them (``keeps_recent``: Tango,
  for rc3 long polling's ``last=``). EPICS targets keep none: 30 s of a PV changing at 10 Hz held
  1.3 MB per PV and worker (bench/pvws_bench.py), for nothing that reads them.
- Failures are events too (``Event.error``): a listener always learns that its value is stale.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("mtango")

# ("tango", host, device, attribute, event type) with lower-case names, or ("epics", PV name)
Key = tuple[Hashable, ...]

# Recent events kept per target for ``last=``: the Java server's 30 s, bounded in number too
# (an attribute changing at 1 kHz would otherwise keep 30,000).
RECENT_SECONDS = 30.0
RECENT_MAX = 1000


@dataclass(slots=True)
class Event:
    """One value (``{name, value, quality, timestamp}``) or failure (FAILURE body with ``name``)
    of a target, as plain data ready for the serializer. Shared by every listener: read-only."""

    body: dict[str, Any]
    time_ms: int  # the value's timestamp; for a failure, when it was noticed
    received: float = field(default_factory=time.monotonic)
    # What a protocol made of it (e.g. the SSE data line), made once for all clients.
    encoded: dict[str, Any] = field(default_factory=dict)
    # What the source knows beyond the body (EPICS: the readings with their metadata, which
    # pvws's first update needs); None for Tango.
    data: Any = None
    seq: int = 0  # the hub's running number of the event in this worker (set by ``publish``)

    @property
    def error(self) -> bool:
        return "errors" in self.body


class Listener(Protocol):
    def push(self, key: Key, event: Event) -> None: ...


class Source(Protocol):
    """Starts and stops the upstream of targets of one kind; publishes through ``hub.publish``.
    ``keeps_recent``: the hub keeps about 30 s of its targets' events (for ``Hub.since``)."""

    keeps_recent: bool

    def start(self, upstream: Upstream) -> None: ...

    def stop(self, upstream: Upstream) -> None: ...

    def describe(self, key: Key) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass
class HubStats:
    """Counters of the whole hub (copied into /metrics by the worker's upkeep)."""

    events: int = 0  # events received from upstream
    errors: int = 0  # of which failures
    deliveries: int = 0  # events put into listeners' queues
    coalesced: int = 0  # events replaced by a newer one of the same target in a full queue


class Upstream:
    """The hub's record of one target: its listeners, its latest and recent events."""

    def __init__(self, key: Key, keep_recent: bool = True) -> None:
        self.key = key
        self.listeners: set[Listener] = set()
        self.latest: Event | None = None
        self.recent: deque[Event] = deque(maxlen=RECENT_MAX if keep_recent else 0)
        self.mode = "starting"  # set by the source: the event type in use, "poll", "retrying", ...
        # Set by the source: every change is pushed (Tango change events), so while healthy the
        # latest value is current whatever its age.
        self.pushes_changes = False
        self.confirmed = 0.0  # monotonic time the latest value was last known to hold
        self.written = False  # a write went to the target since its latest event
        self.events = 0
        self.last_error: dict[str, Any] | None = None
        self.created = int(time.time() * 1000)
        self.closed = False
        self.linger: asyncio.TimerHandle | None = None
        self.source_state: Any = None  # whatever the source keeps for this upstream

    def healthy(self) -> bool:
        """Its latest event is a value and no failure came after it."""
        return self.latest is not None and not self.latest.error

    def describe(self, target: dict[str, Any], now: float) -> dict[str, Any]:
        latest = self.latest
        return {
            "target": target,
            "mode": self.mode,
            "listeners": len(self.listeners),
            "events": self.events,
            "last_event": latest.time_ms if latest else None,
            "last_event_age_s": round(now - latest.received, 3) if latest else None,
            "healthy": self.healthy(),
            "last_error": self.last_error,
            "since": self.created,
        }


class Hub:
    """Every upstream subscription of this worker process."""

    def __init__(self, sources: dict[str, Source], linger: float) -> None:
        self.sources = sources
        self.linger = linger
        # Names this hub's event numbers (``Event.seq``) in ids given to clients: an id from
        # another worker or an earlier process is told apart from one of this hub.
        self.instance = secrets.token_hex(4)
        self.stats = HubStats()
        self._upstreams: dict[Key, Upstream] = {}
        self._loop = asyncio.get_running_loop()

    # -- consumers -------------------------------------------------------------------------------

    def listen(self, key: Key, listener: Listener) -> Upstream:
        """Add ``listener`` to ``key``'s listeners, starting its upstream if there is none."""
        upstream = self._upstream(key)
        upstream.listeners.add(listener)
        if upstream.linger is not None:
            upstream.linger.cancel()
            upstream.linger = None
        return upstream

    def unlisten(self, key: Key, listener: Listener) -> None:
        upstream = self._upstreams.get(key)
        if upstream is None:
            return
        upstream.listeners.discard(listener)
        self._maybe_linger(upstream)

    def keep(self, key: Key) -> Upstream:
        """Start (or keep) ``key``'s upstream without a listener: it lingers, then stops."""
        upstream = self._upstream(key)
        self._maybe_linger(upstream)
        return upstream

    def get(self, key: Key) -> Upstream | None:
        return self._upstreams.get(key)

    def latest(self, key: Key) -> Event | None:
        upstream = self._upstreams.get(key)
        return upstream.latest if upstream is not None else None

    def current(self, key: Key, max_age_s: float) -> Event | None:
        """The latest value of ``key`` if it is known to hold: its upstream is healthy and either
        pushes every change or confirmed the value within ``max_age_s``; otherwise None."""
        upstream = self._upstreams.get(key)
        if max_age_s <= 0 or upstream is None or not upstream.healthy() or upstream.written:
            return None
        if upstream.pushes_changes or time.monotonic() - upstream.confirmed <= max_age_s:
            return upstream.latest
        return None

    def written(self, key: Key) -> None:
        """A write went to ``key``'s target: its latest event no longer answers reads (``current``)
        until the next event comes (the bridge's own polling may take ``tango_poll_ms``)."""
        upstream = self._upstreams.get(key)
        if upstream is not None:
            upstream.written = True

    def since(self, key: Key, time_ms: int) -> list[Event]:
        """Recent events of ``key`` later than ``time_ms`` (at most ~30 s back)."""
        upstream = self._upstreams.get(key)
        if upstream is None:
            return []
        self._forget_old(upstream)
        return [e for e in upstream.recent if e.time_ms > time_ms]

    def upstreams(self) -> list[Upstream]:
        return list(self._upstreams.values())

    def describe(self) -> list[dict[str, Any]]:
        """Every upstream as plain data: target, mode, listeners, events, ages, last error."""
        now = time.monotonic()
        return [u.describe(self.sources[str(u.key[0])].describe(u.key), now)
                for u in self._upstreams.values()]

    def end_listeners(self) -> None:
        """The worker is stopping: every waiting client answers now (streams end, long polls
        answer as at their timeout), so that the server's graceful shutdown need not wait."""
        for upstream in self._upstreams.values():
            for listener in tuple(upstream.listeners):
                end = getattr(listener, "end", None)
                if end is not None:
                    end()

    def close(self) -> None:
        """The worker stops: forget every upstream; the sources stop their tasks (no upstream
        is unsubscribed one by one: the process is going)."""
        for upstream in self._upstreams.values():
            upstream.closed = True
            if upstream.linger is not None:
                upstream.linger.cancel()
        self._upstreams.clear()
        for source in self.sources.values():
            source.close()

    # -- sources ---------------------------------------------------------------------------------

    def publish(self, upstream: Upstream, event: Event) -> None:
        """An event of ``upstream`` (on the loop): keep it and put it in every listener's queue."""
        if upstream.closed:
            return  # arrived after the upstream was dropped
        upstream.latest = event
        upstream.confirmed = event.received
        upstream.written = False
        upstream.events += 1
        self.stats.events += 1
        event.seq = self.stats.events
        if event.error:
            self.stats.errors += 1
            upstream.last_error = {"time": event.time_ms, "errors": event.body["errors"]}
        upstream.recent.append(event)
        self._forget_old(upstream)
        for listener in tuple(upstream.listeners):
            try:
                listener.push(upstream.key, event)
            except Exception:
                log.exception("listener %r failed on an event of %r", listener, upstream.key)
        self.stats.deliveries += len(upstream.listeners)

    # -- internals -------------------------------------------------------------------------------

    def _upstream(self, key: Key) -> Upstream:
        upstream = self._upstreams.get(key)
        if upstream is None:
            source = self.sources.get(str(key[0]))
            if source is None:
                raise KeyError(f"no source for targets of kind {key[0]!r}")
            upstream = self._upstreams[key] = Upstream(key, source.keeps_recent)
            source.start(upstream)
        return upstream

    def _maybe_linger(self, upstream: Upstream) -> None:
        if not upstream.listeners and upstream.linger is None and not upstream.closed:
            upstream.linger = self._loop.call_later(self.linger, self._drop, upstream)

    def _drop(self, upstream: Upstream) -> None:
        if upstream.linger is not None:
            upstream.linger.cancel()
            upstream.linger = None
        if upstream.closed:
            return
        upstream.closed = True
        if self._upstreams.get(upstream.key) is upstream:
            del self._upstreams[upstream.key]
        try:
            self.sources[str(upstream.key[0])].stop(upstream)
        except Exception:
            log.exception("stopping the upstream of %r failed", upstream.key)

    @staticmethod
    def _forget_old(upstream: Upstream) -> None:
        horizon = time.monotonic() - RECENT_SECONDS
        recent = upstream.recent
        while recent and recent[0].received < horizon:
            recent.popleft()


class ClientQueue:
    """One client's bounded queue of events.

    While the client keeps up it gets every event in order. When ``bound`` events wait, newer ones
    go to a side table holding the latest event per target, replacing what was there (counted in
    ``coalesced``) until the client has taken everything: a client that stops reading holds at
    most ``bound`` events plus one per target, and never slows the hub or the other clients.
    """

    def __init__(self, bound: int, stats: HubStats | None = None) -> None:
        self.bound = bound
        self.stats = stats
        self.coalesced = 0
        self._items: deque[tuple[Key, Event]] = deque()
        self._latest: dict[Key, Event] = {}
        self._waiter: asyncio.Future[None] | None = None
        self.ended = False  # the worker is stopping: ``take`` no longer waits

    def __len__(self) -> int:
        return len(self._items) + len(self._latest)

    def push(self, key: Key, event: Event) -> None:
        if self._latest or len(self._items) >= self.bound:
            if key in self._latest:
                self.coalesced += 1
                if self.stats is not None:
                    self.stats.coalesced += 1
            self._latest[key] = event
        else:
            self._items.append((key, event))
        self.wake()

    def end(self) -> None:
        self.ended = True
        self.wake()

    def wake(self) -> None:
        """Let a waiting ``take`` return (with what there is, possibly nothing)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self, timeout: float | None) -> list[tuple[Key, Event]]:
        """Everything waiting, oldest first; waits up to ``timeout`` s (or a ``wake``) for it."""
        if not self._items and not self._latest and not self.ended:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiter = None
        batch = list(self._items)
        self._items.clear()
        if self._latest:
            batch.extend(self._latest.items())
            self._latest.clear()
        return batch
