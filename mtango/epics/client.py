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
callbacks on caproto's threads. Each callback posts a small job to the worker's event loop; all
jobs waiting are run in one loop wake-up (``ChannelPool.post``), so channel state is touched by
the event loop thread only and needs no locks.

Sharing, as a CA gateway does: one ``Channel`` per PV name in the worker, whatever the number of
HTTP clients; a channel that has been read holds one monitor (DBR_TIME) whose latest value serves
reads while it is younger than ``max_age``; concurrent network reads of one PV share one request;
channels nobody asked for during ``idle_timeout`` are released (monitor cancelled, channel
cleared), and searches for PVs that never answered are cancelled after ``dead_timeout``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import caproto as ca
import caproto.client.common as ca_common
from caproto.threading.client import PV, Batch, CallbackHandler, Context, SharedBroadcaster

from mtango.epics.convert import ELEMENT_BYTES, Reading, enum_labels
from mtango.epics.names import is_long_string
from mtango.live.handoff import Handoff

log = logging.getLogger("mtango.epics")

_KICK_INTERVAL = 1.0  # at most one "search again now" per second, whatever the request rate
# New monitors wait until no read is in flight (at most _MONITOR_MAX_DELAY), checked this often.
_MONITOR_DELAY = 0.02
_MONITOR_MAX_DELAY = 1.0
_FLUSH_MAX = 500  # read requests written to one circuit at once (16 bytes each)
_WATCHDOG_INTERVAL = 1.0  # how often caproto's threads are checked


_COLLECT_AFTER_RELEASED = 500


class ChannelError(Exception):
    """A CA failure of one PV, in words an operator can act on."""


class ConnectTimeout(ChannelError):
    """The PV never connected: no IOC answered its search (unknown name or IOC down)."""


class Disconnected(ChannelError):
    """The PV was connected and has lost its IOC (stopped, restarting, network)."""


class ReadTimeout(ChannelError):
    """The PV is connected but its IOC did not answer in time."""


class ArrayTooLarge(ChannelError):
    """The array is bigger than ``EPICS_CA_MAX_ARRAY_BYTES`` allows."""


class TooManySearches(ChannelError):
    """Opening the channel would exceed the worker's bound on names being searched for."""


class ServerError(ChannelError):
    """The IOC answered with a CA error status."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ReadOptions:
    """What one request asks of a read: accepted age of a monitored value, element count."""

    max_age: float = 1.0  # seconds
    fresh: bool = False
    count: int = 0  # 0: all elements


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


class _Broadcaster(SharedBroadcaster):
    """caproto's search broadcaster, sending to the configured addresses only.

    caproto reads ``EPICS_CA_ADDR_LIST`` from ``os.environ`` on every send; the bridge's addresses
    come from its configuration instead (tests and several in-process bridges never share process
    environment). A failing address is logged once and does not stop the searches to the others
    (an exception here would end caproto's search thread).
    """

    def __init__(self, addresses: Iterable[tuple[str, int]]) -> None:
        self._addresses = list(addresses)
        self._failing: set[tuple[str, int]] = set()
        super().__init__()

    def send(self, *commands: Any) -> None:
        payload = self.broadcaster.send(*commands)
        sock = self.udp_sock
        if sock is None:
            return
        for address in self._addresses:
            try:
                sock.sendto(payload, address)
            except OSError as exc:
                if address not in self._failing:
                    self._failing.add(address)
                    log.warning("EPICS search to %s:%d failed: %s", *address, exc)
            else:
                self._failing.discard(address)


class _WakingEvent(threading.Event):
    """A circuit's "ready" event that wakes caproto's selector when caproto starts waiting."""

    def __init__(self, selector: Any) -> None:
        super().__init__()
        self._selector = selector

    def wait(self, timeout: float | None = None) -> bool:
        self._selector._register_event.set()
        return super().wait(timeout)


class _InlineExecutor:
    """Runs a circuit's callbacks at once, on the thread that received the message.

    caproto hands every callback (connection, read answer, monitor update) to a per-circuit
    ``ThreadPoolExecutor``: a Future, a Condition and a thread switch each, about as much CPU
    as the bridge's whole handling of the answer. The bridge's callbacks only queue a job for the
    event loop (``ChannelPool.post``), never block, so they can run where the message is read;
    the order stays that of the messages. An exception is logged, never raised into caproto's
    selector thread (which would end it).
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("EPICS callback %r failed", fn)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def _wake_selector_for_new_circuits(context: Context) -> None:
    """Let caproto's selector thread see a new circuit's socket without its 0.1 s nap.

    ``add_socket`` registers the socket but does not wake the selector thread, which, while it
    has no socket yet, looks again only every 0.1 s: the first PV a worker asks for took 105 ms
    to connect instead of 7 ms (measured). Waking it at once is unsafe: an IOC sends its version
    as soon as it accepts, and caproto's circuit state machine (not thread-safe) loses that
    answer if it is read while the circuit is still sending its own greeting; caproto then drops
    the circuit and its search thread dies (measured: 2 cold starts in 10). So the wake-up
    happens when caproto, greeting sent, starts waiting for the answer: the circuit's "ready"
    event is swapped, before the socket is registered, for one that wakes the selector.
    """
    selector = context.selector
    add_socket = selector.add_socket

    def add_and_wake(sock: Any, target: Any) -> None:
        ready = getattr(target, "_ready", None)
        if type(ready) is threading.Event and not ready.is_set():
            target._ready = _WakingEvent(selector)
        executor = getattr(target, "user_callback_executor", None)
        if isinstance(executor, ThreadPoolExecutor):
            target.user_callback_executor = _InlineExecutor()
            executor.shutdown(wait=False)  # never used: its thread starts on the first submit
        add_socket(sock, target)

    selector.add_socket = add_and_wake


def _add_subscription_callback(sub: Any, func: Callable[[Any, Any], None]) -> int:
    """``Subscription.add_callback`` without its check of the callback's signature.

    caproto inspects every callback it is given (``inspect.signature``, for callbacks written
    for its old one-argument form): 60% of the CPU of setting up a monitor, 90 ms for 1000 PVs
    (measured). The bridge's callback has the current form, so it is registered directly, and
    the monitor is asked for when it is the subscription's first callback, as caproto does.
    """
    with sub.callback_lock:
        first = not sub.callbacks
        token = CallbackHandler.add_callback(sub, func)
        latest = sub.most_recent_response
    if first:
        sub._subscribe()
    elif latest is not None:
        func(sub, latest)
    return token


class _Watch:
    """What a waiting request sleeps on: woken by events of the channels it watches, and told
    which channels had them (so a 1000-PV request re-examines only those)."""

    __slots__ = ("_loop", "_fut", "dirty")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._fut: asyncio.Future | None = None
        self.dirty: set[Channel] = set()

    def poke(self, channel: Channel) -> None:
        self.dirty.add(channel)
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(None)

    def read_done(self, channel: Channel, _fut: asyncio.Future) -> None:
        self.poke(channel)

    async def wait(self, timeout: float) -> None:
        """Until a poke (returns at once if one came since the last wait) or ``timeout``."""
        if self.dirty or timeout <= 0:
            return
        self._fut = self._loop.create_future()
        try:
            await asyncio.wait([self._fut], timeout=min(timeout, 3600.0))
        finally:
            self._fut = None


def _fail(fut: asyncio.Future, error: Exception) -> None:
    """Fail a shared read; marked as seen, since its callers may all have given up already."""
    if not fut.done():
        fut.set_exception(error)
        fut.exception()


class Channel:
    """One PV as the bridge shares it: connection, monitor, latest value, waiting requests.

    Attributes are read and written on the event loop only. The ``on_*`` methods run on
    caproto's threads and do nothing but post jobs to the loop.
    """

    def __init__(self, pool: ChannelPool, name: str) -> None:
        self.pool = pool
        self.name = name
        self.long_string = is_long_string(name)
        self.pv: PV | None = None
        self.connected = False
        self.ever_connected = False
        self.lost_at: float | None = None
        self.native_type: ca.ChannelType | None = None
        self.native_count = 0
        self.access: Any = None
        self.host: str | None = None
        self.monitored = False
        self.latest: Reading | None = None
        self.control: Reading | None = None
        self.labels: tuple[str, ...] = ()
        self.last_used = time.monotonic()
        self.released = False
        self.watchers: set[_Watch] = set()
        self.reads: dict[tuple[str, int | None], asyncio.Future] = {}
        self._subscription: Any = None
        self._subscription_token: int | None = None
        self._connection_token: int | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else "lost" if self.ever_connected else "searching"
        return f"<Channel {self.name} {state}{' monitored' if self.monitored else ''}>"

    @property
    def busy(self) -> bool:
        return bool(self.watchers or self.reads)

    def _poke(self) -> None:
        for watch in self.watchers:
            watch.poke(self)

    def element_bytes(self) -> int:
        return ELEMENT_BYTES.get(self.native_type, 8) if self.native_type is not None else 8

    def not_connected_error(self, timeout_ms: int) -> ChannelError:
        """504-style "never connected" or 503-style "lost", told apart by the channel's history."""
        if self.ever_connected:
            lost = (
                datetime.fromtimestamp(self.lost_at, timezone.utc).isoformat(timespec="seconds")
                if self.lost_at
                else "recently"
            )
            return Disconnected(
                f"{self.name}: lost the connection to its IOC ({self.host}) at {lost}; the "
                "bridge reconnects by itself when the IOC answers again"
            )
        return ConnectTimeout(
            f"{self.name} did not connect within {timeout_ms} ms: no IOC in the address list "
            "answered its search (unknown PV name, or its IOC is down)"
        )

    # -- caproto threads -------------------------------------------------------------------------

    def on_connection(self, pv: PV, state: str) -> None:
        if state != "connected":
            self.pool.post(self._lost, pv)
            return
        channel, circuit = pv.channel, pv.circuit_manager
        if channel is None or circuit is None:
            return
        address, port = circuit.circuit.address
        self.pool.post(
            self._connected,
            pv,
            ca.ChannelType(channel.native_data_type),
            int(channel.native_data_count),
            pv.access_rights,
            f"{address}:{port}",
        )

    def on_update(self, sub: Any, response: Any) -> None:
        self.pool.post(self._updated, sub.pv, response, time.monotonic())

    # -- event loop ------------------------------------------------------------------------------

    def ensure_monitor(self) -> None:
        """Subscribe (DBR_TIME, value and alarm changes); caproto renews the subscription after
        a reconnection. Arrays too large to read get none."""
        if self.released or self._subscription is not None or self.pv is None:
            return
        if not self.connected:
            return
        if self.native_count * self.element_bytes() > self.pool.max_array_bytes:
            return
        self._subscription = self.pv.subscribe(data_type="time")
        # A bound method: caproto holds callbacks weakly; this Channel keeps it alive.
        self._subscription_token = _add_subscription_callback(self._subscription, self.on_update)

    def unsubscribe(self) -> None:
        self.released = True
        self._drop_subscription()

    def _drop_subscription(self) -> bool:
        sub, token = self._subscription, self._subscription_token
        self._subscription = self._subscription_token = None
        if sub is not None and token is not None:
            sub.remove_callback(token)  # the last callback: caproto cancels the monitor upstream
        return sub is not None

    def detach(self) -> bool:
        """Leave a dead caproto context: lose the connection, forget its PV and monitor.

        Returns whether the channel was monitored (to monitor it again on the new context)."""
        monitored = self._subscription is not None
        try:
            self._drop_subscription()
            if self.pv is not None and self._connection_token is not None:
                self.pv.connection_state_callback.remove_callback(self._connection_token)
        except Exception:  # the old context is broken anyway
            self._subscription = self._subscription_token = None
        self._lost(self.pv)
        self.pv, self._connection_token = None, None
        return monitored

    def _connected(
        self, pv: PV, native_type: ca.ChannelType, count: int, access: Any, host: str
    ) -> None:
        if self.released or pv is not self.pv:
            return
        self.connected = self.ever_connected = True
        self.lost_at = None
        self.native_type, self.native_count = native_type, count
        self.access, self.host = access, host
        self.control = None  # limits or enum strings may have changed while it was away
        self._poke()

    def _lost(self, pv: PV | None) -> None:
        if self.released or not self.connected or pv is not self.pv:
            return
        self.connected = False
        self.monitored = False
        self.lost_at = time.time()
        self.latest = None  # never serve a value of an IOC we cannot hear any more
        error = self.not_connected_error(0)
        for fut in list(self.reads.values()):
            _fail(fut, error)
        self.reads.clear()
        self._poke()

    def _updated(self, pv: PV, response: Any, received: float) -> None:
        if self.released or not self.connected or pv is not self.pv:
            return
        self.pool.stats.updates += 1
        self.latest = Reading(response.data, response.metadata, int(response.data_count), received)
        self.monitored = True  # from its first update on, the monitor keeps ``latest`` current
        self._poke()


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handoff: Handoff | None = None
        self._reaper: asyncio.Task | None = None
        self._last_kick = 0.0
        self._outbox: dict[Any, list[tuple[Channel, str, int | None, asyncio.Future]]] = {}
        self._flush_scheduled = False
        self._monitor_queue: dict[Channel, None] = {}
        self._monitor_handle: asyncio.TimerHandle | None = None
        self._monitor_queued_at = 0.0
        self._reading = 0  # read_many calls waiting for the network
        self._last_reset = self._next_reset = 0.0
        self._reset_pause = 1.0

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, handoff: Handoff | None = None) -> None:
        """Create the caproto context; call from the worker's running event loop (after fork).

        ``handoff`` is the worker's one way from other threads to the loop (Tango events use it
        too); a pool of its own is made when none is given."""
        self._loop = asyncio.get_running_loop()
        self._handoff = handoff or Handoff(self._loop)
        self.context = self._new_context()
        self._reaper = self._loop.create_task(self._reap_forever())

    def _new_context(self) -> Context:
        # caproto reads its first search retry interval from a module constant when a search
        # starts; it is a process-wide setting, and the worker has this one context.
        ca_common.MIN_RETRY_SEARCHES_INTERVAL = self.search_retry
        context = Context(_Broadcaster(self.addresses), timeout=self.connect_timeout)
        _wake_selector_for_new_circuits(context)
        return context

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
            channel._poke()
        self.channels.clear()
        if context is not None:
            # Closing joins caproto's threads, which can take seconds (its search thread sleeps
            # up to 5 s between retries): done in the background, the worker need not wait.
            threading.Thread(target=context.disconnect, name="epics-close", daemon=True).start()

    # -- caproto threads -> event loop -----------------------------------------------------------

    def post(self, job: Callable[..., Any], *args: Any) -> None:
        """Run ``job(*args)`` on the event loop; callable from any thread (see Handoff)."""
        if self._handoff is not None:
            self._handoff.post(job, *args)

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
        if self.context is None:
            raise Disconnected("the EPICS client is not running")
        channels = [Channel(self, n) for n in names]
        for channel in channels:
            self.channels[channel.name] = channel
        self._attach(channels)

    def _attach(self, channels: list[Channel]) -> None:
        """Give channels their caproto PVs (one search for all) and connection callbacks."""
        context = self.context
        names = [c.name for c in channels]
        with context.pv_cache_lock:
            known = {n for n in names if (n, 0) in context.pvs}
        pvs = context.get_pvs(*names)
        for channel, pv in zip(channels, pvs, strict=True):
            channel.pv = pv
            handler = pv.connection_state_callback
            channel._connection_token = handler.add_callback(channel.on_connection, run=True)
            if channel.name in known:
                self._revive(pv)

    def _revive(self, pv: PV) -> None:
        """Make a PV that caproto keeps cached, and that we released earlier, connect again.

        caproto's PV objects live as long as their context. After ``go_idle()`` caproto would
        re-create the channel inside its next *blocking* call; the bridge makes no blocking calls,
        so it does the same step here (a CreateChan request on the PV's circuit). A PV whose
        search we cancelled is searched for again.
        """
        if pv.connected:
            return
        context = self.context
        if pv._idle and pv.circuit_ready.is_set():
            with pv.component_lock:
                circuit = pv.circuit_manager
                if circuit is not None and not circuit.dead.is_set():
                    cid = circuit.circuit.new_channel_id()
                    channel = ca.ClientChannel(pv.name, circuit.circuit, cid=cid)
                    circuit.channels[cid] = channel
                    circuit.pvs[cid] = pv
                    pv._idle = False
                    try:
                        circuit.send(channel.create(), extra={"pv": pv.name})
                    except OSError:
                        pass  # the circuit is dying: caproto reconnects its channels
                    return
        circuit = pv.circuit_manager
        if circuit is not None and not circuit.dead.is_set():
            return  # its channel is being created on a live circuit
        with context.pv_cache_lock:
            searching = pv in context.pvs_needing_circuits.get(pv.name, ())
        if not searching:
            context.reconnect([(pv.name, pv.priority)])

    def _release(self, channel: Channel) -> None:
        """Give back an idle channel: cancel its monitor, clear it on the IOC or stop searching."""
        self.channels.pop(channel.name, None)
        channel.unsubscribe()
        self.stats.released += 1
        pv = channel.pv
        if pv is None or self.context is None:
            return
        if channel._connection_token is not None:
            pv.connection_state_callback.remove_callback(channel._connection_token)
        if pv.connected:
            pv.go_idle()
        else:
            self._forget(pv)

    def _forget(self, pv: PV) -> None:
        """Stop searching for a PV nobody asks for; drop it from caproto's cache when it never
        reached a circuit (so unknown names cannot pile up for the worker's lifetime)."""
        context = self.context
        context.broadcaster.cancel(pv.name)
        with context.pv_cache_lock:
            waiting = context.pvs_needing_circuits.get(pv.name)
            if waiting is not None:
                waiting.discard(pv)
                if not waiting:
                    context.pvs_needing_circuits.pop(pv.name, None)
            if pv.circuit_manager is None:
                context.pvs.pop((pv.name, pv.priority), None)

    def reap(self, now: float | None = None) -> int:
        """Release channels unused for ``idle_timeout`` (``dead_timeout`` when not connected)."""
        now = time.monotonic() if now is None else now
        released = 0
        for channel in list(self.channels.values()):
            limit = self.idle_timeout if channel.connected else self.dead_timeout
            if now - channel.last_used > limit and not channel.busy:
                self._release(channel)
                released += 1
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
                self.watch_context()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + interval
                    self.reap()
            except Exception:
                log.exception("EPICS channel upkeep failed")

    # -- watchdog --------------------------------------------------------------------------------

    def dead_threads(self) -> list[str]:
        """caproto threads of the context that have stopped.

        Some of caproto's threads end on an exception they do not catch, and the context then
        silently stops working for good: its search thread dies when an IOC accepts the TCP
        connection but does not answer within 2 s (every later PV stays unconnected), its
        subscription thread when a channel drops while a monitor is being set up.
        """
        context = self.context
        if context is None:
            return []
        broadcaster = context.broadcaster
        threads = [
            context._process_search_results_thread,
            context._activate_subscriptions_thread,
            context.selector.thread,
            broadcaster._command_thread,
            broadcaster.selector.thread,
            broadcaster._retry_unanswered_searches_thread,
            broadcaster._check_for_unresponsive_servers_thread,
        ]
        return [t.name for t in threads if t is not None and not t.is_alive()]

    def watch_context(self) -> bool:
        """Replace the caproto context when one of its threads died (with a growing pause
        between replacements, so an IOC that keeps killing it cannot make the bridge flap).

        The subscription thread alone is simply started again: it dies when a channel drops
        while its monitor is being set up, which an IOC restart can cause; the monitors it was
        setting up are asked for again.
        """
        dead = self.dead_threads()
        if dead == ["activate_subscriptions"]:
            self._restart_subscription_thread()
            return False
        now = time.monotonic()
        if not dead or now < self._next_reset:
            return False
        self._reset_pause = min(60.0, self._reset_pause * 2) if now - self._last_reset < 60 else 1.0
        self._last_reset, self._next_reset = now, now + self._reset_pause
        self.reset_context(f"caproto thread(s) {', '.join(dead)} stopped")
        return True

    def _restart_subscription_thread(self) -> None:
        context = self.context
        log.warning("caproto's subscription thread stopped; starting it again")
        thread = threading.Thread(
            target=context._activate_subscriptions, daemon=True, name="activate_subscriptions"
        )
        context._activate_subscriptions_thread = thread
        thread.start()
        for channel in self.channels.values():
            sub = channel._subscription
            if sub is not None and sub.subscriptionid is None:
                channel._drop_subscription()
                self.want_monitor(channel)

    def reset_context(self, why: str) -> None:
        """A new caproto context; channels move to it, monitored ones are monitored again.

        Channels that never connected are dropped rather than searched for again: they are the
        likeliest cause (an IOC that answers searches but not connections). Requests waiting for
        the others see a lost connection and wait for the new one within their deadline.
        """
        old = self.context
        log.error("EPICS client context replaced: %s", why)
        self.stats.resets += 1
        self.context = self._new_context()
        self._outbox.clear()
        keep, monitor = [], []
        for channel in list(self.channels.values()):
            was_monitored = channel.detach()
            if channel.ever_connected:
                keep.append(channel)
                if was_monitored:
                    monitor.append(channel)
            else:
                del self.channels[channel.name]
                channel.released = True
                channel._poke()
        if keep:
            self._attach(keep)
        for channel in monitor:
            self.want_monitor(channel)
        if old is not None:
            threading.Thread(target=old.disconnect, name="epics-close", daemon=True).start()

    # -- monitors --------------------------------------------------------------------------------

    def want_monitor(self, channel: Channel) -> None:
        """Monitor ``channel`` from now on, once the reads in flight are answered.

        Every PV read through the bridge gets a monitor, as a CA gateway does, but not at once:
        setting up a subscription costs as much CPU as a read (caproto's state machine handles
        each message in Python), so 1000 of them in the middle of a cold 1000-PV read made it
        twice as slow (0.35 s without against 0.8 s with, measured). They start right after.
        """
        if channel._subscription is not None or channel.released:
            return
        if not self._monitor_queue:
            self._monitor_queued_at = time.monotonic()
        self._monitor_queue[channel] = None
        if self._monitor_handle is None:
            self._monitor_handle = self._loop.call_later(_MONITOR_DELAY, self._start_monitors)

    def _start_monitors(self) -> None:
        self._monitor_handle = None
        waited = time.monotonic() - self._monitor_queued_at
        if self._reading and waited < _MONITOR_MAX_DELAY:
            self._monitor_handle = self._loop.call_later(_MONITOR_DELAY, self._start_monitors)
            return
        queue, self._monitor_queue = self._monitor_queue, {}
        for channel in queue:
            try:
                channel.ensure_monitor()
            except Exception:
                log.exception("subscribing to %s failed", channel.name)

    def _kick_search(self) -> None:
        """A request waits for a PV that is not connected: search now rather than at caproto's
        next retry (up to 5 s away), at most once a second."""
        now = time.monotonic()
        if now - self._last_kick >= _KICK_INTERVAL and self.context is not None:
            self._last_kick = now
            self.context.broadcaster.search_now()

    # -- reads -----------------------------------------------------------------------------------

    def _check_size(self, channel: Channel, count: int) -> None:
        elements = min(count, channel.native_count) if count else channel.native_count
        if elements * channel.element_bytes() > self.max_array_bytes:
            raise ArrayTooLarge(
                f"{channel.name} holds {channel.native_count} elements of "
                f"{channel.element_bytes()} bytes, more than EPICS_CA_MAX_ARRAY_BYTES "
                f"({self.max_array_bytes}); ask for fewer with ?count=N"
            )

    def cached(
        self, channel: Channel, options: ReadOptions, now: float, started: float | None = None
    ) -> Reading | None:
        """The monitor's latest value if the request accepts it: younger than ``max_age``, or
        received after the request started. The fast path: no awaiting, no network."""
        latest = channel.latest
        if (
            latest is not None
            and channel.monitored
            and channel.connected
            and not options.fresh
            and (
                now - latest.received <= options.max_age
                or (started is not None and latest.received >= started)
            )
        ):
            self.stats.cache += 1
            return latest
        return None

    def control_cached(self, channel: Channel, now: float) -> Reading | None:
        control = channel.control
        if control is not None and channel.connected and now - control.received < self.metadata_ttl:
            return control
        return None

    async def read_many(
        self,
        channels: list[Channel],
        options: ReadOptions,
        deadline: float,
        kind: str = "time",
    ) -> dict[Channel, Reading | ChannelError]:
        """Values (``kind="time"``) or control metadata (``"control"``) of many channels, by one
        deadline: each outcome is a ``Reading`` or the ``ChannelError`` of that channel.

        One coroutine for the whole set, woken by channel events (connections, monitor updates,
        read answers), so a 1000-PV request costs 1000 small steps, not 1000 tasks. Network reads
        requested in one pass leave together (``_flush``).
        """
        started = time.monotonic()
        connect_deadline = min(deadline, started + self.connect_timeout)
        results: dict[Channel, Reading | ChannelError] = {}
        reads: dict[Channel, asyncio.Future] = {}
        waiting = dict.fromkeys(channels)
        watch = _Watch(self._loop)
        for channel in waiting:
            channel.watchers.add(watch)
        self._reading += 1
        try:
            candidates = list(waiting)
            while True:
                now = time.monotonic()
                for channel in candidates:
                    try:
                        outcome = self._step(
                            channel, options, kind, now, started, connect_deadline, reads, watch
                        )
                    except ChannelError as exc:
                        outcome = exc
                    if outcome is not None:
                        results[channel] = outcome
                        del waiting[channel]
                if not waiting or now >= deadline:
                    break
                unconnected = any(not c.connected for c in waiting)
                if unconnected:
                    self._kick_search()
                limit = min(deadline, connect_deadline if unconnected else math.inf)
                await watch.wait(limit - now)
                if watch.dirty:
                    candidates = [c for c in watch.dirty if c in waiting]
                    watch.dirty.clear()
                else:  # a deadline passed: every channel left gets its verdict
                    candidates = list(waiting)
        finally:
            self._reading -= 1
            for channel in channels:
                channel.watchers.discard(watch)
        for channel in waiting:
            results[channel] = self._late_error(channel)
        return results

    def _step(
        self,
        channel: Channel,
        options: ReadOptions,
        kind: str,
        now: float,
        started: float,
        connect_deadline: float,
        reads: dict[Channel, asyncio.Future],
        watch: _Watch,
    ) -> Reading | ChannelError | None:
        """Advance one channel of a ``read_many``: its outcome, or None to wait for an event."""
        fut = reads.get(channel)
        if fut is not None:
            if not fut.done():
                return None
            del reads[channel]
            error = fut.exception()
            if error is None:
                return fut.result()
            if not isinstance(error, Disconnected) or channel.connected:
                return error
            # Lost during the read: wait below for the reconnection, within the deadlines.
        if not channel.connected:
            if now >= connect_deadline:
                return channel.not_connected_error(int(self.connect_timeout * 1000))
            return None
        if kind == "control":
            reading = self.control_cached(channel, now)
            if reading is not None:
                return reading
            fut = self.request_read(channel, "control", 1)
        else:
            self._check_size(channel, options.count)
            reading = self.cached(channel, options, now, started)
            if reading is not None:
                return reading
            count = options.count if 0 < options.count < channel.native_count else None
            fut = self.request_read(channel, "time", count)
        reads[channel] = fut
        fut.add_done_callback(functools.partial(watch.read_done, channel))
        return None

    def _late_error(self, channel: Channel) -> ChannelError:
        if not channel.connected:
            return channel.not_connected_error(int(self.connect_timeout * 1000))
        return ReadTimeout(
            f"{channel.name}: its IOC ({channel.host}) did not answer within the request's "
            f"{int((self.connect_timeout + self.read_timeout) * 1000)} ms"
        )

    def _read_timeout(self, channel: Channel) -> ReadTimeout:
        return ReadTimeout(
            f"{channel.name}: its IOC ({channel.host}) did not answer a read within "
            f"{int(self.read_timeout * 1000)} ms"
        )

    def request_read(self, channel: Channel, kind: str, count: int | None) -> asyncio.Future:
        """A network read of ``channel``; joins an identical one already under way."""
        key = (kind, count)
        fut = channel.reads.get(key)
        if fut is not None:
            self.stats.shared += 1
            return fut
        return self.request_reads([(channel, kind, count)])[0]

    def request_reads(
        self, requests: list[tuple[Channel, str, int | None]]
    ) -> list[asyncio.Future]:
        """Queue network reads; they leave together at the end of this loop iteration."""
        futures = []
        for channel, kind, count in requests:
            fut = self._loop.create_future()
            futures.append(fut)
            pv = channel.pv
            circuit = pv.circuit_manager if pv is not None else None
            if not channel.connected or circuit is None:
                _fail(fut, channel.not_connected_error(0))
                continue
            key = (kind, count)
            channel.reads[key] = fut
            self.stats.upstream += 1
            self._outbox.setdefault(circuit, []).append((channel, kind, count, fut))
        if self._outbox and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return futures

    def _flush(self) -> None:
        """Send the reads requested during one loop iteration, one message bundle per circuit.

        Concurrent requests (the channels of a batch, many HTTP clients) ask for their reads one
        at a time; sending each alone costs a system call and a thread switch per read, which
        made a 1000-PV read five times slower than sending them together.
        """
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, {}
        for circuit, items in outbox.items():
            if len(items) > _FLUSH_MAX:
                # caproto writes to a non-blocking socket: keep each write small, send the rest
                # on the next loop iteration.
                self._outbox[circuit], items = items[_FLUSH_MAX:], items[:_FLUSH_MAX]
            try:
                with Batch(timeout=self.read_timeout) as batch:
                    for channel, kind, count, fut in items:
                        callback = functools.partial(self._read_answered, channel, kind, count, fut)
                        batch.read(channel.pv, callback, data_type=kind, data_count=count)
            except Exception as exc:  # the circuit died under us, or the channel closed
                for channel, kind, count, fut in items:
                    if channel.reads.get((kind, count)) is fut:
                        del channel.reads[(kind, count)]
                    _fail(fut, Disconnected(f"{channel.name}: {exc}"))
            else:  # one timer for the reads sent together
                self._loop.call_later(self.read_timeout, self._expire_reads, items)
        if self._outbox:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _expire_reads(self, items: list[tuple[Channel, str, int | None, asyncio.Future]]) -> None:
        """Fail the reads of one flush that the IOC has not answered within ``read_timeout``, so
        later requests ask again instead of joining them."""
        for channel, kind, count, fut in items:
            if not fut.done():
                if channel.reads.get((kind, count)) is fut:
                    del channel.reads[(kind, count)]
                _fail(fut, self._read_timeout(channel))

    def _read_answered(
        self, channel: Channel, kind: str, count: int | None, fut: asyncio.Future, response: Any
    ) -> None:  # caproto thread
        self.post(self._read_done, channel, (kind, count), fut, response, time.monotonic())

    def _read_done(
        self,
        channel: Channel,
        key: tuple[str, int | None],
        fut: asyncio.Future,
        response: Any,
        received: float,
    ) -> None:
        if channel.reads.get(key) is fut:
            del channel.reads[key]
        if fut.done():
            return
        status = getattr(response, "status", None)
        if status is not None and not status.success:
            _fail(fut, ServerError(f"{channel.name}: the IOC answered {status.name}", status.name))
            return
        reading = Reading(response.data, response.metadata, int(response.data_count), received)
        if channel.connected and key == ("time", None):
            channel.latest = reading  # the freshest value there is, whoever asked for it
            self.want_monitor(channel)
        elif channel.connected and key[0] == "control":
            channel.control = reading
            channel.labels = enum_labels(reading.metadata)
        fut.set_result(reading)

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
        circuits = subscriptions = 0
        context = self.context
        if context is not None:
            for circuit in list(context.circuit_managers.values()):
                if circuit.connected:
                    circuits += 1
                    subscriptions += len(circuit.subscriptions)
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
