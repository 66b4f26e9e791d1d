"""The Channel Access side: one caproto client context per worker, shared channels and monitors.

Why caproto's *threading* client, bridged by callbacks, rather than its asyncio client: measured on
the 2-core development machine against a softioc IOC with 1000 ai records (caproto 1.3), the
threading client connected 1000 PVs in 0.27 s and answered a batched read of all of them in about
75 ms, against 0.31 s and 220-300 ms for the asyncio client (one coroutine per read, no batching);
single reads bridged into asyncio ran at about 3,500/s against 2,500/s. caproto's own docs also
call its asyncio client lightly tested, while the threading client is the one in wide use.

How the event loop stays free: caproto runs its own threads (selector, search, subscription
activation, callback executors). The bridge never calls a blocking caproto method; it only asks
for things (``get_pvs``, batched read requests, subscriptions) and receives the answers as
callbacks on caproto's threads. Each callback hands a small job to the worker's event loop
(``mtango.live.handoff``), so channel state is touched by the event loop thread only.

Sharing, as a CA gateway does: one ``Channel`` per PV name in the worker, whatever the number of
HTTP clients and stream listeners; a channel that has been read holds one monitor (DBR_TIME) whose
latest value serves reads while it is younger than ``max_age``; concurrent network reads of one PV
share one request; channels nobody asked for during ``idle_timeout`` (and nobody listens to) are
released (monitor cancelled, channel cleared), and searches for PVs that never answered are
cancelled after ``dead_timeout``.

Puts (``ChannelPool.put``) leave the same way as reads: asked for on the loop, sent without
waiting, answered (put completion) through a callback handed to the loop.

The parts: ``channel`` (one PV), ``reads`` (the read scheduler), ``watchdog`` (caproto threads
that die), ``compat`` (every touch of caproto internals), ``puts`` (values to write), and this
module (the pool's life cycle, opening and releasing channels, monitors, puts, and the answers
with their metadata).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import caproto as ca
from caproto.threading.client import Batch, Context

from mtango.epics import compat
from mtango.epics.channel import Channel, ChannelListener, fail
from mtango.epics.convert import PvReading, decode_text
from mtango.epics.errors import (
    ArrayTooLarge,
    ChannelError,
    Disconnected,
    NoWriteAccess,
    ServerError,
    TooManySearches,
    WriteTimeout,
)
from mtango.epics.reads import ReadOptions, ReadScheduler
from mtango.epics.watchdog import Watchdog
from mtango.live.handoff import Handoff

log = logging.getLogger("mtango.epics")

_KICK_INTERVAL = 1.0  # at most one "search again now" per second, whatever the request rate
# New monitors wait until no read is in flight (at most _MONITOR_MAX_DELAY), checked this often.
_MONITOR_DELAY = 0.02
_MONITOR_MAX_DELAY = 1.0
_WATCHDOG_INTERVAL = 1.0  # how often caproto's threads are checked
_COLLECT_AFTER_RELEASED = 500

Answer = PvReading | ChannelError


@dataclass
class PoolStats:
    """Where reads were served from, for the health endpoint."""

    cache: int = 0  # served from a monitor's latest value (or its first update)
    upstream: int = 0  # network reads sent to an IOC
    shared: int = 0  # joined a network read already under way
    updates: int = 0  # monitor updates received
    released: int = 0  # channels released after being idle
    resets: int = 0  # caproto contexts replaced after one of their threads died

    def as_dict(self) -> dict[str, int]:
        return {
            "cache": self.cache,
            "upstream": self.upstream,
            "shared": self.shared,
            "monitor_updates": self.updates,
            "released_channels": self.released,
            "context_resets": self.resets,
        }


@dataclass(frozen=True)
class PutResult:
    """How a put ended: ``confirmed`` when the IOC said it has processed the record (a put with
    completion; ``status`` is its CA status name), not for a plain put (``status`` "SENT": sent,
    no answer expected). ``seconds`` from sending to the confirmation."""

    confirmed: bool
    status: str
    seconds: float = 0.0


class _Found:
    """Where caproto's search thread puts ``(address, names)`` answered for the pool's searches
    (the ``results_queue`` of ``SharedBroadcaster.search``): handed to the loop."""

    __slots__ = ("pool", "context")

    def __init__(self, pool: ChannelPool, context: Context) -> None:
        self.pool, self.context = pool, context

    def put(self, item: tuple[Any, list[str]]) -> None:
        self.pool.post(self.pool._names_found, self.context, list(item[1]))


class ChannelPool:
    """All channels of one worker process, on one caproto ``Context``."""

    def __init__(
        self,
        addresses: Iterable[tuple[str, int]],
        *,
        max_array_bytes: int,
        connect_timeout: float,
        read_timeout: float,
        search_retry: float,
        idle_timeout: float,
        dead_timeout: float,
        metadata_ttl: float,
        max_searching: int = 5000,
    ) -> None:
        self.addresses = list(addresses)
        self.max_array_bytes = max_array_bytes
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.search_retry = search_retry
        self.idle_timeout = idle_timeout
        self.dead_timeout = dead_timeout
        self.metadata_ttl = metadata_ttl
        self.max_searching = max_searching
        self._released_uncollected = 0
        self.channels: dict[str, Channel] = {}
        self.stats = PoolStats()
        self.context: Context | None = None
        self.watchdog = Watchdog(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reads: ReadScheduler | None = None
        self._handoff: Handoff | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._last_kick = 0.0
        self._monitor_queue: dict[Channel, None] = {}
        self._monitor_handle: asyncio.TimerHandle | None = None
        self._monitor_queued_at = 0.0

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, handoff: Handoff | None = None) -> None:
        """Create the caproto context; call from the worker's running event loop (after fork).

        ``handoff`` is the worker's one way from other threads to the loop (Tango events use it
        too); one of its own is made when none is given."""
        self._loop = loop = asyncio.get_running_loop()
        self._handoff = handoff or Handoff(loop)
        self._reads = ReadScheduler(self, loop)
        self.context = self.new_context()
        self._reaper = loop.create_task(self._reap_forever())

    def new_context(self) -> Context:
        return compat.new_context(self.addresses, self.connect_timeout, self.search_retry)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise Disconnected("the EPICS client is not running")
        return self._loop

    @property
    def reads(self) -> ReadScheduler:
        if self._reads is None:
            raise Disconnected("the EPICS client is not running")
        return self._reads

    def running_context(self) -> Context:
        if self.context is None:
            raise Disconnected("the EPICS client is not running")
        return self.context

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        if self._monitor_handle is not None:
            self._monitor_handle.cancel()
            self._monitor_handle = None
        context, self.context = self.context, None
        for channel in list(self.channels.values()):
            channel.unsubscribe()
            channel.poke()
        self.channels.clear()
        if context is not None:
            # Closing joins caproto's threads, which can take seconds (its search thread sleeps
            # up to 5 s between retries): done in the background, the worker need not wait.
            threading.Thread(target=context.disconnect, name="epics-close", daemon=True).start()

    def post(self, job: Any, *args: Any) -> None:
        """Run ``job(*args)`` on the event loop; callable from any thread (see Handoff)."""
        if self._handoff is not None:
            self._handoff.post(job, *args)

    # -- what the backend and the hub ask ---------------------------------------------------------

    def open(self, names: list[str]) -> None:
        """Make sure each name has its channel (one search for all missing ones); callers check
        ``refused`` first."""
        self.channels_for(names)

    def open_one(self, name: str) -> None:
        """Open one name's channel, or raise ``TooManySearches``."""
        if self.refused([name]):
            raise self.too_many_searches()
        self.channels_for([name])

    def cached_value(self, name: str, options: ReadOptions, now: float) -> PvReading | None:
        """The fast path: a monitored value the request accepts, enum labels known, no waiting."""
        channel = self.channels.get(name)
        if channel is None or not self._labels_ready(channel, now):
            return None
        reading = self.reads.cached(channel, options, now)
        return channel.answer(reading) if reading is not None else None

    async def values(self, names: list[str], options: ReadOptions, deadline: float
                     ) -> dict[str, Answer]:
        """Values of open channels by one deadline (enum labels fetched as needed)."""
        reads = self.reads
        channels = self.channels_for(names)
        outcomes = await reads.read_many(channels, options, deadline)
        now = time.monotonic()
        enums = [c for c, out in outcomes.items()
                 if not isinstance(out, ChannelError) and not self._labels_ready(c, now)]
        if enums:
            controls = await reads.read_many(enums, options, deadline, kind="control")
            for channel, control in controls.items():
                if isinstance(control, ChannelError):
                    outcomes[channel] = control
        return {c.name: out if isinstance(out, ChannelError) else c.answer(out)
                for c, out in outcomes.items()}

    async def controls(self, names: list[str], deadline: float) -> dict[str, Answer]:
        """Control metadata (DBR_CTRL) of open channels by one deadline."""
        channels = self.channels_for(names)
        outcomes = await self.reads.read_many(channels, ReadOptions(), deadline, kind="control")
        return {c.name: out if isinstance(out, ChannelError) else c.answer(out)
                for c, out in outcomes.items()}

    # -- puts ------------------------------------------------------------------------------------

    def check_write_access(self, name: str) -> None:
        """Raise ``NoWriteAccess`` unless the IOC's access rights let this client write ``name``
        (an open, connected channel). The rights are caproto's latest (the IOC may change them
        while connected); unknown rights (an IOC that never sent any) leave the IOC to decide."""
        channel = self._connected_channel(name)
        rights = channel.pv.access_rights if channel.pv is not None else None
        if rights is None and channel.meta is not None:
            rights = channel.meta.access
        if rights is not None and not int(rights) & ca.AccessRights.WRITE:
            raise NoWriteAccess(
                f"{name}: its IOC ({channel.host}) gives this bridge no write access "
                f"({ca.AccessRights(int(rights)).name or 'NO_ACCESS'}); nothing was written")

    def _connected_channel(self, name: str) -> Channel:
        channel = self.channels.get(name)
        if channel is None:
            raise Disconnected(f"{name}: no channel is open for it")
        if not channel.connected or channel.pv is None:
            raise channel.not_connected_error(int(self.connect_timeout * 1000))
        return channel

    def check_put(self, name: str, count: int) -> Channel:
        """What ``put`` checks before sending (raises as it would): ``name``'s channel is
        connected, writable, and ``count`` elements fit in EPICS_CA_MAX_ARRAY_BYTES."""
        channel = self._connected_channel(name)
        self.check_write_access(name)
        size = count * channel.element_bytes()
        if size > self.max_array_bytes:
            raise ArrayTooLarge(
                f"{name}: {count} elements of {channel.element_bytes()} bytes to write, more "
                f"than EPICS_CA_MAX_ARRAY_BYTES ({self.max_array_bytes})")
        return channel

    async def put(self, name: str, data: Any, count: int, *, wait: bool, deadline: float,
                  data_type: Any = None) -> PutResult:
        """Write ``data`` (``count`` elements, from ``puts.put_value``) to an open channel.

        ``wait``: a put with completion (CA WRITE_NOTIFY): answered when the IOC has processed
        the record, by ``deadline`` (else ``WriteTimeout``); an IOC error status is a
        ``ServerError`` (``ECA_NOWTACCESS`` a ``NoWriteAccess``). Without ``wait``: a plain put,
        answered once sent. Nothing is sent without write access or past ``deadline``, and a put
        is never sent twice. ``data_type`` (default: the native type) is for tests.

        Why caproto's ``Batch.write`` rather than ``PV.write(wait=False, callback=...)``: both
        send without waiting for the answer, but ``PV.write`` first passes caproto's
        ``ensure_connected``, which takes the PV's lock and *waits* (up to the timeout) for the
        channel to be ready: it blocks whenever the channel has just dropped, before the loop
        has heard of it. ``Batch.write`` builds the request and sends it, nothing else; its
        callback comes on caproto's circuit thread (the selector thread that reads the IOC's
        answer, see ``compat._InlineExecutor``) and is handed to the loop.
        """
        channel = self.check_put(name, count)
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise WriteTimeout(f"{name}: no time left to send the put; nothing was written")
        channel.last_used = time.monotonic()
        fut: asyncio.Future[str] | None = None
        callback = None
        if wait:
            fut = self.loop.create_future()
            callback = functools.partial(self._put_answered, channel, fut)
        sent = time.monotonic()
        try:
            with Batch(timeout=timeout) as batch:
                batch.write(channel.pv, data, callback=callback, data_type=data_type,
                            data_count=count)
        except Exception as exc:  # the circuit died under us, or the channel closed
            raise Disconnected(f"{name}: the put could not be sent: {exc}") from None
        if fut is None:
            return PutResult(False, "SENT")
        channel.add_put(fut)
        try:
            done, _ = await asyncio.wait([fut], timeout=max(deadline - time.monotonic(), 0.0))
        finally:
            channel.drop_put(fut)
        if not done:
            fail(fut, WriteTimeout(name))  # an answer after this is dropped (caproto's deadline)
            raise WriteTimeout(
                f"{name}: its IOC ({channel.host}) did not confirm the put within "
                f"{timeout:.1f} s; the record may still be processing it (the put is not sent "
                "again)")
        return PutResult(True, fut.result(), time.monotonic() - sent)

    def _put_answered(self, channel: Channel, fut: asyncio.Future[str], response: Any) -> None:
        # caproto thread: a WriteNotifyResponse, or an ErrorResponse (compat)
        self.post(self._put_done, channel, fut, response)

    def _put_done(self, channel: Channel, fut: asyncio.Future[str], response: Any) -> None:
        channel.drop_put(fut)
        if fut.done():
            return
        status = response.status
        if status.success:
            fut.set_result(status.name)
            return
        message = getattr(response, "error_message", None)
        detail = f": {decode_text(bytes(message))}" if message else ""
        text = (f"{channel.name}: the IOC refused the put with {status.name} "
                f"({status.description}){detail}")
        if status.name == "ECA_NOWTACCESS":
            fail(fut, NoWriteAccess(text))
        else:
            fail(fut, ServerError(text, status.name))

    def _labels_ready(self, channel: Channel, now: float) -> bool:
        return channel.native_type != ca.ChannelType.ENUM or (
            self.reads.control_cached(channel, now) is not None)

    def listen(self, name: str, listener: ChannelListener) -> Channel:
        """Tell ``listener`` about ``name``'s connection and every monitor update from now on
        (the monitor starts at once, by the size rule); the channel is kept while it listens.
        Raises ``TooManySearches`` when the name cannot get a channel."""
        self.open_one(name)
        channel = self.channels[name]
        channel.add_listener(listener)
        if channel.connected:
            channel.ensure_monitor()
        return channel

    def unlisten(self, name: str, listener: ChannelListener) -> None:
        channel = self.channels.get(name)
        if channel is not None:
            channel.drop_listener(listener)
            channel.last_used = time.monotonic()

    # -- channels --------------------------------------------------------------------------------

    def channels_for(self, names: list[str]) -> list[Channel]:
        """The shared channel of each name, opening missing ones with one search for all."""
        now = time.monotonic()
        missing = [n for n in dict.fromkeys(names) if n not in self.channels]
        if missing:
            self._open(missing)
        found = [self.channels[n] for n in names]
        for channel in found:
            channel.last_used = now
        return found

    def refused(self, names: list[str]) -> set[str]:
        """The names that would have no new channel: beyond ``max_searching`` unconnected ones."""
        missing = [n for n in dict.fromkeys(names) if n not in self.channels]
        if not missing:
            return set()
        searching = sum(1 for c in self.channels.values() if not c.connected)
        room = max(self.max_searching - searching, 0)
        return set(missing[room:])

    def too_many_searches(self) -> TooManySearches:
        return TooManySearches(
            f"this worker is already searching for {self.max_searching} PV names that no IOC "
            "has answered (epics_max_searching); try again when they have connected or been "
            "given up")

    def _open(self, names: list[str]) -> None:
        self.running_context()
        channels = [Channel(self, n) for n in names]
        for channel in channels:
            self.channels[channel.name] = channel
        self.attach(channels)

    def attach(self, channels: list[Channel]) -> None:
        """Search for the channels' names (one search for all); give each its caproto PV and
        connection callbacks once an IOC has answered its name (``compat.search``: a name
        nobody answers holds no caproto PV)."""
        context = self.running_context()
        names = [c.name for c in channels]
        known = compat.known(context, names)
        ready = [c for c in channels
                 if c.name in known or compat.search_answered(context, c.name)]
        if len(ready) < len(channels):
            ready_names = {c.name for c in ready}
            compat.search(context, [n for n in names if n not in ready_names],
                          _Found(self, context))
        if ready:
            self._give_pvs(context, ready, known)

    def _give_pvs(self, context: Context, channels: list[Channel], known: set[str]) -> None:
        pvs = context.get_pvs(*[c.name for c in channels])
        for channel, pv in zip(channels, pvs, strict=True):
            channel.attach(pv)
            if channel.name in known:
                compat.revive(context, pv)

    def _names_found(self, context: Context, names: list[str]) -> None:
        """On the loop: an IOC answered the search for ``names`` (``_Found``)."""
        if context is not self.context:
            return  # a search of a context replaced since: the new one searches again
        waiting = []
        for name in names:
            channel = self.channels.get(name)
            if channel is not None and channel.pv is None and not channel.released:
                waiting.append(channel)
        if waiting:
            self._give_pvs(context, waiting, compat.known(context, [c.name for c in waiting]))

    def _release(self, channel: Channel, unsearch: list[str]) -> None:
        """Give back an idle channel: cancel its monitor, clear it on the IOC or stop searching
        (its name goes to ``unsearch``: the searches of many are cancelled at once)."""
        self.channels.pop(channel.name, None)
        pv = channel.release()
        self.stats.released += 1
        if self.context is None:
            return
        if pv is None or not pv.connected:
            unsearch.append(channel.name)
        if pv is None:
            return
        if pv.connected:
            pv.go_idle()
        else:
            compat.forget(self.context, pv)

    def reap(self, now: float | None = None) -> int:
        """Release channels unused for ``idle_timeout`` (``dead_timeout`` when not connected)."""
        now = time.monotonic() if now is None else now
        released = 0
        unsearch: list[str] = []
        for channel in list(self.channels.values()):
            limit = self.idle_timeout if channel.connected else self.dead_timeout
            if now - channel.last_used > limit and not channel.busy:
                self._release(channel, unsearch)
                released += 1
        if unsearch and self.context is not None:
            compat.cancel_searches(self.context, unsearch)
        # A released channel's caproto PV (events, locks, callbacks) is held in reference cycles
        # that have reached the oldest generation by then; with the worker's large young-GC
        # threshold (app.py) full collections are rare, and 1000 unknown names a round grew the
        # heap by 46,000 blocks (5 MB RSS) a round for good. A full collection of the unfrozen
        # heap takes a few ms: one after every 500 released channels, and one when releases
        # pause, keep the heap flat.
        self._released_uncollected += released
        if self._released_uncollected >= _COLLECT_AFTER_RELEASED or (
                self._released_uncollected and not released):
            self._released_uncollected = 0
            gc.collect()
        return released

    async def _reap_forever(self) -> None:
        interval = min(30.0, max(0.25, min(self.idle_timeout, self.dead_timeout) / 4))
        next_reap = time.monotonic() + interval
        while True:
            await asyncio.sleep(min(interval, _WATCHDOG_INTERVAL))
            try:
                self.watchdog.check()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + interval
                    self.reap()
            except Exception:
                log.exception("EPICS channel upkeep failed")

    # -- monitors --------------------------------------------------------------------------------

    def want_monitor(self, channel: Channel) -> None:
        """Monitor ``channel`` from now on, once the reads in flight are answered.

        Every PV read through the bridge gets a monitor, as a CA gateway does, but not at once:
        setting up a subscription costs as much CPU as a read (caproto's state machine handles
        each message in Python), so 1000 of them in the middle of a cold 1000-PV read made it
        twice as slow (0.35 s without against 0.8 s with, measured). They start right after.
        """
        if channel.subscribed or channel.released:
            return
        if not self._monitor_queue:
            self._monitor_queued_at = time.monotonic()
        self._monitor_queue[channel] = None
        if self._monitor_handle is None:
            self._monitor_handle = self.loop.call_later(_MONITOR_DELAY, self._start_monitors)

    def _start_monitors(self) -> None:
        self._monitor_handle = None
        waited = time.monotonic() - self._monitor_queued_at
        if self.reads.waiting and waited < _MONITOR_MAX_DELAY:
            self._monitor_handle = self.loop.call_later(_MONITOR_DELAY, self._start_monitors)
            return
        queue, self._monitor_queue = self._monitor_queue, {}
        for channel in queue:
            try:
                channel.ensure_monitor()
            except Exception:
                log.exception("subscribing to %s failed", channel.name)

    def kick_search(self) -> None:
        """A request waits for a PV that is not connected: search now rather than at caproto's
        next retry (up to 5 s away), at most once a second."""
        now = time.monotonic()
        if now - self._last_kick >= _KICK_INTERVAL and self.context is not None:
            self._last_kick = now
            compat.search_now(self.context)

    def restart_monitors(self) -> None:
        """Ask again for monitors whose request never reached an IOC (see ``Watchdog``)."""
        for channel in self.channels.values():
            if channel.subscription_pending():
                channel.drop_subscription()
                self.want_monitor(channel)

    def reset_context(self, why: str) -> None:
        """A new caproto context; channels move to it, monitored ones are monitored again.

        Channels that never connected (and nobody listens to) are dropped rather than searched
        for again: they are the likeliest cause (an IOC that answers searches but not
        connections). Requests waiting for the others see a lost connection and wait for the new
        one within their deadline.
        """
        old = self.context
        log.error("EPICS client context replaced: %s", why)
        self.stats.resets += 1
        self.context = self.new_context()
        self.reads.clear()
        keep, monitor = [], []
        for channel in list(self.channels.values()):
            was_monitored = channel.detach()
            if channel.ever_connected or channel.listeners:
                keep.append(channel)
                if was_monitored:
                    monitor.append(channel)
            else:
                del self.channels[channel.name]
                channel.released = True
                channel.poke()
        if keep:
            self.attach(keep)
        for channel in monitor:
            self.want_monitor(channel)
        if old is not None:
            threading.Thread(target=old.disconnect, name="epics-close", daemon=True).start()

    # -- health ----------------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        connected = lost = searching = monitored = 0
        for channel in list(self.channels.values()):
            if channel.connected:
                connected += 1
            elif channel.ever_connected:
                lost += 1
            else:
                searching += 1
            monitored += channel.monitored
        circuits, subscriptions = (compat.circuit_counts(self.context)
                                   if self.context is not None else (0, 0))
        return {
            "channels": {
                "total": len(self.channels),
                "connected": connected,
                "searching": searching,
                "disconnected": lost,
                "monitored": monitored,
            },
            "circuits": circuits,
            "subscriptions": subscriptions,
            "reads": self.stats.as_dict(),
        }
