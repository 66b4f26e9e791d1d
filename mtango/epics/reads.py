"""The read scheduler: values and control metadata of many channels by one deadline.

Reads are served from a channel's monitor when the request accepts its age (``ReadOptions``);
otherwise a network read is asked for. Concurrent network reads of one PV share one request, and
the reads asked for during one loop iteration leave together, one message bundle per circuit
(``_flush``). A waiting request is one coroutine woken by the events of its channels, so a
1000-PV request costs 1000 small steps, not 1000 tasks.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caproto.threading.client import Batch

from mtango.epics import compat
from mtango.epics.channel import Channel, fail
from mtango.epics.convert import Reading, enum_labels
from mtango.epics.errors import ArrayTooLarge, ChannelError, Disconnected, ReadTimeout, ServerError

if TYPE_CHECKING:
    from mtango.epics.pool import ChannelPool

_FLUSH_MAX = 500  # read requests written to one circuit at once (16 bytes each)

Outcome = Reading | ChannelError
_Item = tuple[Channel, str, "int | None", "asyncio.Future[Reading]"]


@dataclass(frozen=True)
class ReadOptions:
    """What one request asks of a read: accepted age of a monitored value, element count."""

    max_age: float = 1.0  # seconds
    fresh: bool = False
    count: int = 0  # 0: all elements


class Watch:
    """What a waiting request sleeps on: woken by events of the channels it watches, and told
    which channels had them (so a 1000-PV request re-examines only those)."""

    __slots__ = ("_loop", "_fut", "dirty")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._fut: asyncio.Future[None] | None = None
        self.dirty: set[Channel] = set()

    def poke(self, channel: Channel) -> None:
        self.dirty.add(channel)
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(None)

    def read_done(self, channel: Channel, _fut: asyncio.Future[Reading]) -> None:
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


class ReadScheduler:
    """The reads of one ``ChannelPool``; runs on its event loop."""

    def __init__(self, pool: ChannelPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self._loop = loop
        self._outbox: dict[Any, list[_Item]] = {}
        self._flush_scheduled = False
        self.waiting = 0  # read_many calls waiting for the network

    def clear(self) -> None:
        """Forget reads not sent yet (their circuit's context is gone)."""
        self._outbox.clear()

    def check_size(self, channel: Channel, count: int) -> None:
        elements = min(count, channel.native_count) if count else channel.native_count
        if elements * channel.element_bytes() > self.pool.max_array_bytes:
            raise ArrayTooLarge(
                f"{channel.name} holds {channel.native_count} elements of "
                f"{channel.element_bytes()} bytes, more than EPICS_CA_MAX_ARRAY_BYTES "
                f"({self.pool.max_array_bytes}); ask for fewer with ?count=N"
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
            self.pool.stats.cache += 1
            return latest
        return None

    def control_cached(self, channel: Channel, now: float) -> Reading | None:
        control = channel.control
        if (control is not None and channel.connected
                and now - control.received < self.pool.metadata_ttl):
            return control
        return None

    async def read_many(
        self,
        channels: list[Channel],
        options: ReadOptions,
        deadline: float,
        kind: str = "time",
    ) -> dict[Channel, Outcome]:
        """Values (``kind="time"``) or control metadata (``"control"``) of many channels, by one
        deadline: each outcome is a ``Reading`` or the ``ChannelError`` of that channel.

        Network reads requested in one pass leave together (``_flush``).
        """
        pool = self.pool
        started = time.monotonic()
        connect_deadline = min(deadline, started + pool.connect_timeout)
        results: dict[Channel, Outcome] = {}
        reads: dict[Channel, asyncio.Future[Reading]] = {}
        waiting = dict.fromkeys(channels)
        watch = Watch(self._loop)
        for channel in waiting:
            channel.add_watcher(watch)
        self.waiting += 1
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
                    pool.kick_search()
                limit = min(deadline, connect_deadline if unconnected else math.inf)
                await watch.wait(limit - now)
                if watch.dirty:
                    candidates = [c for c in watch.dirty if c in waiting]
                    watch.dirty.clear()
                else:  # a deadline passed: every channel left gets its verdict
                    candidates = list(waiting)
        finally:
            self.waiting -= 1
            for channel in channels:
                channel.drop_watcher(watch)
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
        reads: dict[Channel, asyncio.Future[Reading]],
        watch: Watch,
    ) -> Outcome | None:
        """Advance one channel of a ``read_many``: its outcome, or None to wait for an event."""
        fut = reads.get(channel)
        if fut is not None:
            if not fut.done():
                return None
            del reads[channel]
            error = fut.exception()
            if error is None:
                return fut.result()
            if not isinstance(error, ChannelError):
                raise error
            if not isinstance(error, Disconnected) or channel.connected:
                return error
            # Lost during the read: wait below for the reconnection, within the deadlines.
        if not channel.connected:
            if now >= connect_deadline:
                return channel.not_connected_error(int(self.pool.connect_timeout * 1000))
            return None
        if kind == "control":
            reading = self.control_cached(channel, now)
            if reading is not None:
                return reading
            fut = self.request_read(channel, "control", 1)
        else:
            self.check_size(channel, options.count)
            reading = self.cached(channel, options, now, started)
            if reading is not None:
                return reading
            count = options.count if 0 < options.count < channel.native_count else None
            fut = self.request_read(channel, "time", count)
        reads[channel] = fut
        fut.add_done_callback(functools.partial(watch.read_done, channel))
        return None

    def _late_error(self, channel: Channel) -> ChannelError:
        pool = self.pool
        if not channel.connected:
            return channel.not_connected_error(int(pool.connect_timeout * 1000))
        return ReadTimeout(
            f"{channel.name}: its IOC ({channel.host}) did not answer within the request's "
            f"{int((pool.connect_timeout + pool.read_timeout) * 1000)} ms"
        )

    def _read_timeout(self, channel: Channel) -> ReadTimeout:
        return ReadTimeout(
            f"{channel.name}: its IOC ({channel.host}) did not answer a read within "
            f"{int(self.pool.read_timeout * 1000)} ms"
        )

    def request_read(self, channel: Channel, kind: str, count: int | None
                     ) -> asyncio.Future[Reading]:
        """A network read of ``channel``; joins an identical one already under way."""
        fut = channel.reads.get((kind, count))
        if fut is not None:
            self.pool.stats.shared += 1
            return fut
        return self.request_reads([(channel, kind, count)])[0]

    def request_reads(
        self, requests: list[tuple[Channel, str, int | None]]
    ) -> list[asyncio.Future[Reading]]:
        """Queue network reads; they leave together at the end of this loop iteration."""
        futures = []
        for channel, kind, count in requests:
            fut: asyncio.Future[Reading] = self._loop.create_future()
            futures.append(fut)
            circuit = compat.circuit_of(channel.pv)
            if not channel.connected or circuit is None:
                fail(fut, channel.not_connected_error(0))
                continue
            channel.reads[(kind, count)] = fut
            self.pool.stats.upstream += 1
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
        read_timeout = self.pool.read_timeout
        for circuit, items in outbox.items():
            if len(items) > _FLUSH_MAX:
                # caproto writes to a non-blocking socket: keep each write small, send the rest
                # on the next loop iteration.
                self._outbox[circuit], items = items[_FLUSH_MAX:], items[:_FLUSH_MAX]
            try:
                with Batch(timeout=read_timeout) as batch:
                    for channel, kind, count, fut in items:
                        callback = functools.partial(self._read_answered, channel, kind, count, fut)
                        batch.read(channel.pv, callback, data_type=kind, data_count=count)
            except Exception as exc:  # the circuit died under us, or the channel closed
                for channel, kind, count, fut in items:
                    if channel.reads.get((kind, count)) is fut:
                        del channel.reads[(kind, count)]
                    fail(fut, Disconnected(f"{channel.name}: {exc}"))
            else:  # one timer for the reads sent together
                self._loop.call_later(read_timeout, self._expire_reads, items)
        if self._outbox:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _expire_reads(self, items: list[_Item]) -> None:
        """Fail the reads of one flush that the IOC has not answered within ``read_timeout``, so
        later requests ask again instead of joining them."""
        for channel, kind, count, fut in items:
            if not fut.done():
                if channel.reads.get((kind, count)) is fut:
                    del channel.reads[(kind, count)]
                fail(fut, self._read_timeout(channel))

    def _read_answered(
        self, channel: Channel, kind: str, count: int | None, fut: asyncio.Future[Reading],
        response: Any,
    ) -> None:  # caproto thread
        self.pool.post(self._read_done, channel, (kind, count), fut, response, time.monotonic())

    def _read_done(
        self,
        channel: Channel,
        key: tuple[str, int | None],
        fut: asyncio.Future[Reading],
        response: Any,
        received: float,
    ) -> None:
        if channel.reads.get(key) is fut:
            del channel.reads[key]
        if fut.done():
            return
        status = getattr(response, "status", None)
        if status is not None and not status.success:
            fail(fut, ServerError(f"{channel.name}: the IOC answered {status.name}", status.name))
            return
        reading = Reading(response.data, response.metadata, int(response.data_count), received)
        if channel.connected and key == ("time", None):
            channel.latest = reading  # the freshest value there is, whoever asked for it
            self.pool.want_monitor(channel)
        elif channel.connected and key[0] == "control":
            channel.set_labels(reading, enum_labels(reading.metadata))
        fut.set_result(reading)
