"""EPICS upstreams of the subscription hub: one CA monitor per PV and worker.

For each target ``("epics", name)`` the hub asks ``EpicsEvents.start``; the name is checked
(syntax, allow/deny rules) and the PV's shared channel gets a listener (``ChannelPool.listen``),
which starts its monitor at once. Then, on the event loop:

- when the channel connects (and again after each reconnection) its control metadata (DBR_CTRL:
  units, limits, precision, enum labels) is read, and the first value published carries it;
- every monitor update is an event: the value object of the read API as body, and a ``PvUpdate``
  (the reading and the control metadata) as data, from which pvws makes its messages;
- a disconnection is a failure event (``EPICS_DISCONNECTED``, ``connected: false``), and a PV that
  has not connected within the connect timeout gets one too (``EPICS_CONNECT_TIMEOUT``); the
  channel keeps searching, and values flow again when the IOC answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from mtango.epics import convert
from mtango.epics.channel import CONNECTED, DISCONNECTED, VALUE, Channel
from mtango.epics.convert import PvReading
from mtango.epics.errors import ChannelError
from mtango.errors import ApiError, ErrorEntry, failure_body
from mtango.live.hub import Event, Hub, Key, Upstream

if TYPE_CHECKING:
    from mtango.epics.backend import EpicsBackend

log = logging.getLogger("mtango.epics")

RETRY_S = 5.0  # before asking again for a channel that was refused (too many searches)


def epics_key(name: str) -> Key:
    return ("epics", name)


@dataclass(frozen=True, slots=True)
class PvUpdate:
    """``Event.data`` of an EPICS value: the reading with its channel's metadata, and the PV's
    control metadata (DBR_CTRL) as read at its last (re)connection."""

    value: PvReading
    control: PvReading


class _State:
    __slots__ = ("listener", "channel", "control", "pending", "timer", "task")

    def __init__(self) -> None:
        self.listener: Any = None
        self.channel: Channel | None = None
        self.control: PvReading | None = None
        self.pending: PvReading | None = None  # a value that came before the control metadata
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None


def error_event(entries: list[ErrorEntry], name: str) -> Event:
    return Event(failure_body(entries, name=name, connected=False), int(time.time() * 1000))


class EpicsEvents:
    """The hub's source for EPICS targets."""

    keeps_recent = False  # nothing asks a PV's past events; its latest is kept

    def __init__(self, backend: EpicsBackend) -> None:
        self.backend = backend
        self.hub: Hub | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, hub: Hub) -> None:
        self.hub = hub

    # -- Source ----------------------------------------------------------------------------------

    def start(self, upstream: Upstream) -> None:
        state = upstream.source_state = _State()
        name = str(upstream.key[1])
        upstream.pushes_changes = True  # a monitor sends every change
        try:
            self.backend.check(name)
            pool = self.backend.running_pool()
        except ApiError as exc:
            upstream.mode = "refused"
            self._publish(upstream, error_event(exc.entries, name))
            return
        state.listener = partial(self._notice, upstream)
        try:
            channel = state.channel = pool.listen(name, state.listener)
        except ChannelError as exc:  # too many names searched for: ask again later
            upstream.mode = "retrying"
            self._publish(upstream, error_event(self.backend.error(exc, name).entries, name))
            state.timer = asyncio.get_running_loop().call_later(RETRY_S, self._retry, upstream)
            return
        if channel.connected:
            self._connected(upstream)
        else:
            upstream.mode = "searching"
            state.timer = asyncio.get_running_loop().call_later(
                pool.connect_timeout, self._not_connected, upstream)

    def stop(self, upstream: Upstream) -> None:
        state: _State = upstream.source_state
        if state.timer is not None:
            state.timer.cancel()
        if state.task is not None:
            state.task.cancel()
        pool = self.backend.pool
        if state.listener is not None and pool is not None:
            pool.unlisten(str(upstream.key[1]), state.listener)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    def describe(self, key: Key) -> dict[str, Any]:
        return {"system": "epics", "pv": key[1]}

    # -- the channel's notices -------------------------------------------------------------------

    def _retry(self, upstream: Upstream) -> None:
        if not upstream.closed:
            self.start(upstream)

    def _notice(self, upstream: Upstream, notice: str, answer: PvReading | None) -> None:
        if upstream.closed:
            return
        state: _State = upstream.source_state
        if notice == VALUE and answer is not None:
            if state.control is None:
                state.pending = answer
            else:
                self._publish_value(upstream, answer)
        elif notice == CONNECTED:
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None
            self._connected(upstream)
        elif notice == DISCONNECTED:
            state.control = state.pending = None
            upstream.mode = "disconnected"
            channel = state.channel
            assert channel is not None
            error = channel.not_connected_error(0)
            self._publish(upstream, error_event(
                self.backend.error(error, channel.name).entries, channel.name))

    def _not_connected(self, upstream: Upstream) -> None:
        state: _State = upstream.source_state
        state.timer = None
        channel = state.channel
        if upstream.closed or channel is None or channel.connected:
            return
        pool = self.backend.pool
        timeout_ms = int(pool.connect_timeout * 1000) if pool is not None else 0
        error = channel.not_connected_error(timeout_ms)
        self._publish(upstream, error_event(
            self.backend.error(error, channel.name).entries, channel.name))

    def _connected(self, upstream: Upstream) -> None:
        """Read the control metadata, then publish the value waiting for it (or the latest)."""
        state: _State = upstream.source_state
        upstream.mode = "connecting"
        if state.task is not None:
            state.task.cancel()
        task = state.task = asyncio.get_running_loop().create_task(self._read_control(upstream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_control(self, upstream: Upstream) -> None:
        state: _State = upstream.source_state
        channel = state.channel
        pool = self.backend.pool
        if channel is None or pool is None:
            return
        while not upstream.closed and channel.connected:
            outcome = (await pool.controls([channel.name], time.monotonic() + self.backend.span)
                       )[channel.name]
            if upstream.closed or not channel.connected:
                return
            if isinstance(outcome, PvReading):
                state.control = outcome
                upstream.mode = "monitor"
                pending, state.pending = state.pending, None
                if pending is None and channel.latest is not None and channel.monitored:
                    pending = channel.answer(channel.latest)
                if pending is not None:
                    self._publish_value(upstream, channel.answer(pending.reading))
                return
            self._publish(upstream, error_event(
                self.backend.error(outcome, channel.name).entries, channel.name))
            await asyncio.sleep(RETRY_S)

    def _publish_value(self, upstream: Upstream, answer: PvReading) -> None:
        state: _State = upstream.source_state
        assert state.control is not None
        body = convert.value_body(answer)
        event = Event(body, body["timestamp"], data=PvUpdate(answer, state.control))
        self._publish(upstream, event)

    def _publish(self, upstream: Upstream, event: Event) -> None:
        if self.hub is not None:
            self.hub.publish(upstream, event)
