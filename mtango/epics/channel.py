"""One PV as the bridge shares it: connection, monitor, latest value, waiting requests, listeners.

A ``Channel``'s attributes are read and written on the event loop only. Its ``on_*`` methods run
on caproto's threads and do nothing but hand a job to the loop (``ChannelPool.post``), so channel
state needs no locks.

Monitors (DBR_TIME, value and alarm changes) start for a channel that has been read (after the
reads in flight, see ``ChannelPool.want_monitor``) and at once for one with *listeners* (the hub's
EPICS source). The size rule: a monitor asks for at most ``EPICS_CA_MAX_ARRAY_BYTES`` of elements.
A PV whose whole array fits is monitored in full and its updates serve reads too; a larger one is
monitored only for listeners, truncated to the elements that fit (its updates say so: ``count``
below ``native_count``), and never serves reads, which still answer 413.

Listeners are told, in order, what happens to the channel: ``CONNECTED`` (first connection or
reconnection; values follow), ``VALUE`` with a ``PvReading``, ``DISCONNECTED`` (the IOC is gone;
nothing the channel held is current any more).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import caproto as ca
from caproto.threading.client import PV

from mtango.epics import compat
from mtango.epics.convert import ELEMENT_BYTES, ChannelMeta, PvReading, Reading
from mtango.epics.errors import ChannelError, ConnectTimeout, Disconnected
from mtango.epics.names import is_long_string

log = logging.getLogger("mtango.epics")

if TYPE_CHECKING:
    from mtango.epics.pool import ChannelPool
    from mtango.epics.reads import Watch

CONNECTED, VALUE, DISCONNECTED = "connected", "value", "disconnected"
# A listener: called on the event loop with the notice and, for VALUE, the reading.
ChannelListener = Callable[[str, PvReading | None], None]


K = TypeVar("K")


def _added(keys: dict[K, None] | None, key: K) -> dict[K, None]:
    if keys is None:
        return {key: None}
    keys[key] = None
    return keys


def _dropped(keys: dict[K, None] | None, key: K) -> dict[K, None] | None:
    if keys is not None:
        keys.pop(key, None)
    return keys or None


def fail(fut: asyncio.Future[Any], error: Exception) -> None:
    """Fail a shared read; marked as seen, since its callers may all have given up already."""
    if not fut.done():
        fut.set_exception(error)
        fut.exception()


class Channel:
    """One PV of the worker, whatever the number of HTTP clients and listeners asking for it."""

    __slots__ = (
        "pool", "name", "long_string", "pv", "connected", "ever_connected", "lost_at",
        "native_type", "native_count", "host", "meta", "monitored", "monitor_count", "latest",
        "control", "last_used", "released", "watchers", "reads", "puts", "listeners",
        "_subscription", "_subscription_token", "_connection_token", "__weakref__",
    )

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
        self.host: str | None = None
        self.meta: ChannelMeta | None = None  # set on each connection
        self.monitored = False  # a full-size monitor keeps ``latest`` current
        self.monitor_count: int | None = None  # elements the monitor asks for (None: all)
        self.latest: Reading | None = None
        self.control: Reading | None = None
        self.last_used = time.monotonic()
        self.released = False
        self.reads: dict[tuple[str, int | None], asyncio.Future[Reading]] = {}
        # Dicts used as ordered sets, made when first needed (``add``/``drop``): every unknown
        # name searched for has a channel, up to 20,000 at a time (bench/suite.py case 11), and
        # most never get a watcher, a put with completion or a listener (an empty set is 216 B).
        self.watchers: dict[Watch, None] | None = None
        self.puts: dict[asyncio.Future[Any], None] | None = None  # puts not confirmed yet
        self.listeners: dict[ChannelListener, None] | None = None
        self._subscription: Any = None
        self._subscription_token: int | None = None
        self._connection_token: int | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else "lost" if self.ever_connected else "searching"
        return f"<Channel {self.name} {state}{' monitored' if self.monitored else ''}>"

    @property
    def busy(self) -> bool:
        return bool(self.watchers or self.reads or self.listeners or self.puts)

    @property
    def subscribed(self) -> bool:
        return self._subscription is not None

    def poke(self) -> None:
        for watch in tuple(self.watchers or ()):
            watch.poke(self)

    def add_watcher(self, watch: Watch) -> None:
        self.watchers = _added(self.watchers, watch)

    def drop_watcher(self, watch: Watch) -> None:
        self.watchers = _dropped(self.watchers, watch)

    def add_put(self, fut: asyncio.Future[Any]) -> None:
        self.puts = _added(self.puts, fut)

    def drop_put(self, fut: asyncio.Future[Any]) -> None:
        self.puts = _dropped(self.puts, fut)

    def add_listener(self, listener: ChannelListener) -> None:
        self.listeners = _added(self.listeners, listener)

    def drop_listener(self, listener: ChannelListener) -> None:
        self.listeners = _dropped(self.listeners, listener)

    def element_bytes(self) -> int:
        return ELEMENT_BYTES.get(self.native_type, 8) if self.native_type is not None else 8

    def answer(self, reading: Reading) -> PvReading:
        """``reading`` with this channel's metadata (the pool's answers carry it)."""
        meta = self.meta
        assert meta is not None, "a reading of a channel that never connected"
        return PvReading(meta, reading)

    def not_connected_error(self, timeout_ms: int) -> ChannelError:
        """"Never connected" or "lost", told apart by the channel's history."""
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

    def set_labels(self, control: Reading, labels: tuple[str, ...]) -> None:
        self.control = control
        if self.meta is not None and self.meta.labels != labels:
            self.meta = ChannelMeta(self.meta.name, self.meta.native_type,
                                    self.meta.native_count, self.meta.access, self.meta.host,
                                    self.meta.long_string, labels)

    def _notify(self, notice: str, answer: PvReading | None = None) -> None:
        for listener in tuple(self.listeners or ()):
            try:
                listener(notice, answer)
            except Exception:
                log.exception("listener of %s failed", self.name)

    # -- caproto threads -------------------------------------------------------------------------

    def on_connection(self, pv: PV, state: str) -> None:
        if state != "connected":
            self.pool.post(self._lost, pv)
            return
        facts = compat.connection_facts(pv)
        if facts is not None:
            self.pool.post(self._connected, pv, *facts)

    def on_update(self, sub: Any, response: Any) -> None:
        self.pool.post(self._updated, sub.pv, response, time.monotonic())

    # -- event loop ------------------------------------------------------------------------------

    def ensure_monitor(self) -> None:
        """Subscribe (DBR_TIME, value and alarm changes) by the size rule; caproto renews the
        subscription after a reconnection."""
        if self.released or self._subscription is not None or self.pv is None:
            return
        if not self.connected:
            return
        fits = max(self.pool.max_array_bytes // self.element_bytes(), 1)
        if self.native_count > fits and not self.listeners:
            return  # too large to read: monitored only for listeners
        self.monitor_count = fits if self.native_count > fits else None
        self._subscription = self.pv.subscribe(data_type="time", data_count=self.monitor_count)
        # A bound method: caproto holds callbacks weakly; this Channel keeps it alive.
        self._subscription_token = compat.add_subscription_callback(
            self._subscription, self.on_update)

    def unsubscribe(self) -> None:
        self.released = True
        self.drop_subscription()

    def drop_subscription(self) -> bool:
        sub, token = self._subscription, self._subscription_token
        self._subscription = self._subscription_token = None
        self.monitored = False
        if sub is not None and token is not None:
            sub.remove_callback(token)  # the last callback: caproto cancels the monitor upstream
        return sub is not None

    def subscription_pending(self) -> bool:
        return self._subscription is not None and compat.subscription_pending(self._subscription)

    def attach(self, pv: PV) -> None:
        self.pv = pv
        self._connection_token = pv.connection_state_callback.add_callback(
            self.on_connection, run=True)

    def detach(self) -> bool:
        """Leave a dead caproto context: lose the connection, forget its PV and monitor.

        Returns whether the channel was monitored (to monitor it again on the new context)."""
        monitored = self._subscription is not None
        try:
            self.drop_subscription()
            self._remove_connection_callback()
        except Exception:  # the old context is broken anyway
            self._subscription = self._subscription_token = None
        self._lost(self.pv)
        self.pv, self._connection_token = None, None
        return monitored

    def _remove_connection_callback(self) -> None:
        if self.pv is not None and self._connection_token is not None:
            self.pv.connection_state_callback.remove_callback(self._connection_token)
            self._connection_token = None

    def release(self) -> PV | None:
        """Stop everything of this channel; returns its caproto PV for the pool to give back."""
        self.unsubscribe()
        self._remove_connection_callback()
        return self.pv

    def _connected(
        self, pv: PV, native_type: ca.ChannelType, count: int, access: Any, host: str
    ) -> None:
        if self.released or pv is not self.pv:
            return
        self.connected = self.ever_connected = True
        self.lost_at = None
        self.native_type, self.native_count, self.host = native_type, count, host
        self.meta = ChannelMeta(self.name, native_type, count, access, host, self.long_string)
        self.control = None  # limits or enum strings may have changed while it was away
        self.poke()
        if self.listeners:
            self._notify(CONNECTED)
            if self._subscription is None:
                self.ensure_monitor()

    def _lost(self, pv: PV | None) -> None:
        if self.released or not self.connected or pv is not self.pv:
            return
        self.connected = False
        self.monitored = False
        self.lost_at = time.time()
        self.latest = None  # never serve a value of an IOC we cannot hear any more
        error = self.not_connected_error(0)
        for fut in list(self.reads.values()):
            fail(fut, error)
        self.reads.clear()
        if self.puts:
            lost = Disconnected(
                f"{self.name}: lost the connection to its IOC ({self.host}) before it confirmed "
                "the put; the put may or may not have been done (it is not sent again)")
            for fut in list(self.puts):
                fail(fut, lost)
            self.puts = None
        self.poke()
        self._notify(DISCONNECTED)

    def _updated(self, pv: PV, response: Any, received: float) -> None:
        if self.released or not self.connected or pv is not self.pv:
            return
        self.pool.stats.updates += 1
        reading = Reading(response.data, response.metadata, int(response.data_count), received)
        if self.monitor_count is None:
            self.latest = reading
            self.monitored = True  # from its first update on, the monitor keeps ``latest`` current
            self.poke()
        if self.listeners:
            self._notify(VALUE, self.answer(reading))
