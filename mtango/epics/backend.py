"""The EPICS backend: what the ``/epics/rest/v1`` routes ask of Channel Access, as plain data.

One instance per worker process, started after the fork. It checks names (syntax, allow/deny
rules) before any CA traffic, reads through the shared ``ChannelPool``, converts answers with
``convert`` and turns CA failures into the bridge's one error model:

| failure | HTTP | reason |
|---|---|---|
| never connected within the connect timeout | 504 | ``EPICS_CONNECT_TIMEOUT`` |
| was connected, connection lost | 503 | ``EPICS_DISCONNECTED`` |
| connected, no answer to a read | 504 | ``EPICS_READ_TIMEOUT`` |
| array over ``EPICS_CA_MAX_ARRAY_BYTES`` | 413 | ``EPICS_ARRAY_TOO_LARGE`` |
| IOC answered with a CA error | 502 | ``EPICS_CA_ERROR`` |
| name refused by the allow/deny rules | 403 | ``EPICS_PV_DENIED`` |
| no EPICS address configured | 503 | ``EPICS_NOT_CONFIGURED`` |
| ``epics_max_searching`` names already searched for | 503 | ``EPICS_TOO_MANY_SEARCHES`` |
| a value to write the PV's type cannot hold | 400 | ``EPICS_BAD_VALUE`` |
| the IOC's access rights refuse writes | 403 | ``EPICS_NO_WRITE_ACCESS`` |
| connected, a put with completion not confirmed in time | 504 | ``EPICS_WRITE_TIMEOUT`` |

Reads of many PVs answer one item per name, values or FAILURE items, within one deadline.

Writes (``write``): the name is checked, the channel connected and its control metadata read
(enum labels), write access checked, the value converted for the PV's native type
(``puts.put_value``), the value before read, the put sent (with completion by default), and the
value read back from the IOC. Nothing is sent when any step before the put fails; a put is never
sent twice. A failure after the put went out is a ``WriteFailed`` (an ``ApiError``) that still
tells the audit what was sent.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any

from mtango.cache import SingleFlight
from mtango.config import Config
from mtango.epics import convert, puts
from mtango.epics.compat import broadcast_addresses
from mtango.epics.errors import (
    ArrayTooLarge,
    BadValue,
    ChannelError,
    ConnectTimeout,
    Disconnected,
    NoWriteAccess,
    ReadTimeout,
    ServerError,
    TooManySearches,
    WriteTimeout,
)
from mtango.epics.names import NameRules, check_pv_name
from mtango.epics.pool import ChannelPool
from mtango.epics.reads import ReadOptions
from mtango.errors import ApiError, ErrorEntry, bad_request, failure_body
from mtango.live.handoff import Handoff

log = logging.getLogger("mtango.epics")

HEALTH_PROBE_TTL = 2.0  # seconds a reachability probe of the IOC addresses is reused

_ERRORS: dict[type[ChannelError], tuple[str, int]] = {
    ConnectTimeout: ("EPICS_CONNECT_TIMEOUT", 504),
    Disconnected: ("EPICS_DISCONNECTED", 503),
    ReadTimeout: ("EPICS_READ_TIMEOUT", 504),
    ArrayTooLarge: ("EPICS_ARRAY_TOO_LARGE", 413),
    ServerError: ("EPICS_CA_ERROR", 502),
    TooManySearches: ("EPICS_TOO_MANY_SEARCHES", 503),
    BadValue: ("EPICS_BAD_VALUE", 400),
    NoWriteAccess: ("EPICS_NO_WRITE_ACCESS", 403),
    WriteTimeout: ("EPICS_WRITE_TIMEOUT", 504),
}


def api_error(exc: ChannelError, name: str) -> ApiError:
    reason, status = _ERRORS.get(type(exc), ("EPICS_CA_ERROR", 502))
    return ApiError(ErrorEntry(reason, str(exc), "ERR", f"epics:{name}"), status)


@dataclass(frozen=True)
class WriteOutcome:
    """What ``EpicsBackend.write`` did. ``body`` is the answer: the value object read back
    after the put, as ``GET pvs/{pv}/value`` answers it. For the audit, as plain JSON values:
    ``before`` (the value before the put), ``sent`` (the value as converted and put: an enum as
    its index, text as text), ``after`` (the value read back); ``confirmed`` says the IOC
    confirmed the put (a put with completion), not merely that it was sent."""

    body: dict[str, Any]
    before: Any
    sent: Any
    after: Any
    confirmed: bool = True


class WriteFailed(ApiError):
    """A write that failed after its put was sent (or may have been): not confirmed in time, an
    IOC error status, the connection lost, or the value not read back. The FAILURE body as
    usual; ``before`` and ``sent`` (plain JSON values) for the audit, since the IOC may have
    changed the PV."""

    def __init__(self, error: ApiError, before: Any, sent: Any) -> None:
        super().__init__(error.entries, error.status, error.kind)
        self.before = before
        self.sent = sent


# Channel Access messages are a 16-byte big-endian header: command, payload size, data type, data
# count, parameter 1, parameter 2 (the CA protocol specification). VERSION (0) carries the
# priority in the data type and the minor protocol version in the count; ECHO (23) is empty.
_CA_HEADER = struct.Struct(">HHHHII")
_CA_VERSION, _CA_ECHO, _CA_MINOR_VERSION = 0, 23, 13


async def _ca_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send VERSION + ECHO on a new circuit; return when the server's ECHO comes back."""
    writer.write(_CA_HEADER.pack(_CA_VERSION, 0, 0, _CA_MINOR_VERSION, 0, 0)
                 + _CA_HEADER.pack(_CA_ECHO, 0, 0, 0, 0, 0))
    await writer.drain()
    while True:
        command, size, *_ = _CA_HEADER.unpack(await reader.readexactly(_CA_HEADER.size))
        if size:
            await reader.readexactly(size)
        if command == _CA_ECHO:
            return


def _is_broadcast(host: str) -> bool:
    return host == "255.255.255.255" or host.endswith(".255")


class EpicsBackend:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.rules = NameRules(config.epics_allow, config.epics_deny)
        self.pool: ChannelPool | None = None
        self.span = (config.epics_connect_timeout_ms + config.epics_read_timeout_ms) / 1000
        self._probe = SingleFlight()
        self._probed: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self.failures = 0  # reads that ended in an error, for the metrics

    # -- life cycle ------------------------------------------------------------------------------

    def search_addresses(self) -> list[tuple[str, int]]:
        """Configured addresses, plus the broadcast addresses of EPICS_CA_AUTO_ADDR_LIST=YES."""
        addresses = list(self.config.epics_addresses)
        if self.config.epics_ca_auto_addr_list:
            port = self.config.epics_ca_server_port
            found = broadcast_addresses()
            addresses += [(a, port) for a in found if (a, port) not in addresses]
        return addresses

    def start(self, handoff: Handoff | None = None) -> None:
        """Create the worker's CA client, unless EPICS is not configured (then it sends nothing).

        ``handoff`` is the worker's way from other threads to its loop (see Handoff)."""
        if not self.config.epics_configured:
            return
        self.pool = ChannelPool(
            self.search_addresses(),
            max_array_bytes=self.config.epics_ca_max_array_bytes,
            connect_timeout=self.config.epics_connect_timeout_ms / 1000,
            read_timeout=self.config.epics_read_timeout_ms / 1000,
            search_retry=self.config.epics_search_retry_ms / 1000,
            idle_timeout=self.config.epics_idle_timeout,
            dead_timeout=self.config.epics_dead_timeout,
            metadata_ttl=self.config.epics_metadata_ttl,
            max_searching=self.config.epics_max_searching,
        )
        self.pool.start(handoff)

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()

    @property
    def configured(self) -> bool:
        return self.config.epics_configured

    @property
    def running(self) -> bool:
        return self.pool is not None and self.pool.context is not None

    def release_channels(self) -> None:
        """Give back every channel not in use (``/sys/clean/pvs``); the next read connects anew."""
        if self.pool is not None:
            self.pool.reap(now=float("inf"))

    def figures(self, full: bool) -> dict[str, Any] | None:
        """Counters for the metrics; ``full`` adds channel states (a walk over all channels)."""
        if self.pool is None:
            return None
        stats = self.pool.stats
        found: dict[str, Any] = {
            "cache": stats.cache + stats.shared,
            "upstream": stats.upstream,
            "failures": self.failures,
            "channels": len(self.pool.channels),
        }
        if full:
            counts = self.pool.counts()
            found["states"] = {k: v for k, v in counts["channels"].items() if k != "total"}
            found["subscriptions"] = counts["subscriptions"]
        return found

    @staticmethod
    def error(exc: ChannelError, name: str) -> ApiError:
        """The error model's form of a CA failure (not counted as a failed read)."""
        return api_error(exc, name)

    def _failure(self, exc: ChannelError, name: str) -> ApiError:
        self.failures += 1
        return api_error(exc, name)

    # -- checks ----------------------------------------------------------------------------------

    def running_pool(self) -> ChannelPool:
        if self.pool is None:
            raise ApiError(
                ErrorEntry(
                    "EPICS_NOT_CONFIGURED",
                    "this bridge has no EPICS address configured (set EPICS_CA_ADDR_LIST, or "
                    "EPICS_CA_AUTO_ADDR_LIST=YES to search on every local network)",
                    "ERR",
                    "epics",
                ),
                503,
            )
        return self.pool

    def check(self, name: str) -> str:
        """A valid name this bridge may serve; 400 or 403 before any network traffic."""
        check_pv_name(name)
        if not self.rules.allowed(name):
            raise ApiError(
                ErrorEntry(
                    "EPICS_PV_DENIED",
                    f"{name} is not served by this bridge (epics_allow / epics_deny rules)",
                    "ERR",
                    f"epics:{name}",
                ),
                403,
            )
        return name

    def options(self, max_age_ms: int | None, fresh: bool, count: int) -> ReadOptions:
        age = self.config.epics_max_age_ms if max_age_ms is None else max_age_ms
        return ReadOptions(max_age=age / 1000, fresh=fresh, count=count)

    # -- values ----------------------------------------------------------------------------------

    def _value_body(
        self,
        answer: convert.PvReading,
        options: ReadOptions,
        encoding: str,
        started: float,
    ) -> dict[str, Any]:
        """The value object, converted once per reading and options, stamped per request."""
        reading = answer.reading
        key = (options.count, encoding)
        body = reading.bodies.get(key)
        if body is None:
            body = convert.value_body(answer, options.count, encoding)
            if len(reading.bodies) >= 8:  # a client cycling through ?count values
                reading.bodies.clear()
            reading.bodies[key] = body
        now = time.monotonic()
        out = dict(body)
        out["cached"] = reading.received < started
        out["age_ms"] = max(0, int((now - reading.received) * 1000))
        return out

    def _open(self, pool: ChannelPool, name: str) -> None:
        try:
            pool.open_one(name)
        except TooManySearches as exc:
            raise api_error(exc, name) from None

    async def value(self, name: str, options: ReadOptions, encoding: str = "json") -> dict:
        """``GET pvs/{pv}/value``: the value object of one PV."""
        pool = self.running_pool()
        self.check(name)
        started = time.monotonic()
        self._open(pool, name)
        return await self._read(name, options, started, encoding)

    async def _read(self, name: str, options: ReadOptions, started: float,
                    encoding: str = "json") -> dict[str, Any]:
        """The value object of an open channel, by ``started`` + connect and read timeouts."""
        pool = self.running_pool()
        answer = pool.cached_value(name, options, started)
        if answer is None:
            outcome = (await pool.values([name], options, started + self.span))[name]
            if isinstance(outcome, ChannelError):
                raise self._failure(outcome, name)
            answer = outcome
        return self._value_body(answer, options, encoding, started)

    # -- writes ----------------------------------------------------------------------------------

    async def write(self, name: str, raw: Any, *, wait: bool = True,
                    timeout: float | None = None) -> WriteOutcome:
        """Write ``raw`` (a JSON value, or a query string's text) to one PV and read it back.

        ``wait``: a put with completion (answered once the IOC has processed the record, within
        ``timeout`` seconds, by default ``epics_read_timeout_ms``); ``wait=False``: a plain put
        (answered once sent). The checks, connection and reads before the put share one
        deadline (connect + read timeout, as a read); the read-back has its own. A PV too large
        to read (413) is not written either: its value before could not be told.
        """
        pool = self.running_pool()
        self.check(name)
        started = time.monotonic()
        self._open(pool, name)
        control = await self._control(name, started + self.span)  # connected, labels known
        try:
            pool.check_write_access(name)
            data, count = puts.put_value(control.meta, control.reading.metadata, raw)
        except ChannelError as exc:
            raise api_error(exc, name) from None
        sent = puts.sent_value(control.meta, data)
        before = (await self._read(name, self.options(None, False, 0), started)).get("value")
        put_timeout = self.config.epics_read_timeout_ms / 1000 if timeout is None else timeout
        try:  # what ``put`` checks before sending; nothing awaited in between
            pool.check_put(name, count)
        except ChannelError as exc:
            raise api_error(exc, name) from None
        try:
            result = await pool.put(name, data, count, wait=wait,
                                    deadline=time.monotonic() + max(put_timeout, 0.001))
        except ChannelError as exc:  # the put went out, or may have
            raise WriteFailed(api_error(exc, name), before, sent) from None
        fresh = ReadOptions(max_age=0.0, fresh=True)
        try:
            body = await self._read(name, fresh, time.monotonic())
        except ApiError as exc:
            entry = exc.entries[0]
            done = "written (the IOC confirmed the put)" if result.confirmed else "sent"
            readback = ErrorEntry(entry.reason, f"the value was {done}, but reading it back "
                                  f"failed: {entry.description}", entry.severity, entry.origin)
            raise WriteFailed(ApiError(readback, exc.status), before, sent) from None
        return WriteOutcome(body, before, sent, body.get("value"), result.confirmed)

    async def _control(self, name: str, deadline: float) -> convert.PvReading:
        pool = self.running_pool()
        outcome = (await pool.controls([name], deadline))[name]
        if isinstance(outcome, ChannelError):
            raise self._failure(outcome, name)
        return outcome

    async def info(self, name: str) -> dict[str, Any]:
        """``GET pvs/{pv}/info``: control metadata (units, limits, enum strings, access)."""
        pool = self.running_pool()
        self.check(name)
        self._open(pool, name)
        return convert.info_body(await self._control(name, time.monotonic() + self.span))

    async def full(self, name: str, options: ReadOptions, encoding: str = "json") -> dict:
        """``GET pvs/{pv}``: value, time, alarm and metadata in one object."""
        value = await self.value(name, options, encoding)
        self._open(self.running_pool(), name)
        control = await self._control(name, time.monotonic() + self.span)
        return convert.full_object(value, convert.info_body(control))

    async def values(
        self, names: list[str], options: ReadOptions, encoding: str = "json"
    ) -> list[dict[str, Any]]:
        """Many PVs, one deadline for all: one item per requested name, value or FAILURE."""
        pool = self.running_pool()
        if not names:
            raise bad_request("name the PVs to read: ?pv=A&pv=B or a JSON list", "MissingParameter")
        if len(names) > self.config.epics_batch_max:
            raise bad_request(
                f"{len(names)} PVs in one request; at most {self.config.epics_batch_max} "
                "(epics_batch_max)",
                "TooManyPVs",
            )
        started = time.monotonic()
        results: dict[str, dict[str, Any]] = {}
        valid = []
        for name in dict.fromkeys(names):
            try:
                valid.append(self.check(name))
            except ApiError as exc:
                results[name] = failure_body(exc.entries, name=name, connected=False)
        refused = pool.refused(valid)
        if refused:
            for name in refused:
                error = api_error(pool.too_many_searches(), name)
                results[name] = failure_body(error.entries, name=name, connected=False)
            valid = [n for n in valid if n not in refused]
        pool.open(valid)
        slow = []
        for name in valid:
            answer = pool.cached_value(name, options, started)
            if answer is None:
                slow.append(name)
            else:
                results[name] = self._value_body(answer, options, encoding, started)
        if slow:
            outcomes = await pool.values(slow, options, started + self.span)
            for name, outcome in outcomes.items():
                results[name] = self._item(name, outcome, options, encoding, started)
        return [results[name] for name in names]

    def _item(self, name: str, outcome: convert.PvReading | ChannelError, options: ReadOptions,
              encoding: str, started: float) -> dict[str, Any]:
        if isinstance(outcome, ChannelError):
            error = self._failure(outcome, name)
            return failure_body(error.entries, name=name, connected=outcome.connected)
        return self._value_body(outcome, options, encoding, started)

    # -- health ----------------------------------------------------------------------------------

    async def health(self) -> tuple[dict[str, Any], int]:
        """Channel, circuit, subscription and read counts; 503 when an IOC address is down."""
        if self.pool is None:
            return {"status": "NOT_CONFIGURED", "addresses": []}, 503
        addresses = await self._probe.run("probe", self._addresses_state)
        reachable = all(a["reachable"] is not False for a in addresses)
        body: dict[str, Any] = {
            "status": "OK" if reachable else "UNREACHABLE",
            "addresses": addresses,
            "auto_addr_list": self.config.epics_ca_auto_addr_list,
            **self.pool.counts(),
        }
        return body, 200 if reachable else 503

    async def _addresses_state(self) -> list[dict[str, Any]]:
        """Does a CA server answer at each configured unicast address?

        CA servers listen for TCP on their search port (rsrv and caproto alike). A TCP connect
        alone is not enough: a frozen IOC (SIGSTOP) still has its connections accepted by the
        kernel. So the probe speaks CA: a VERSION and an ECHO request, and the server must echo
        within the deadline. Broadcast addresses cannot be probed this way and report ``null``.
        Results are reused briefly so a busy health check does not hammer the IOCs.
        """
        at, found = self._probed
        if found and time.monotonic() - at < HEALTH_PROBE_TTL:
            return found
        timeout = min(1.0, self.config.epics_connect_timeout_ms / 1000)

        async def probe(host: str, port: int) -> dict[str, Any]:
            state: dict[str, Any] = {"address": f"{host}:{port}", "reachable": None}
            if _is_broadcast(host):
                return state
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout)
                await asyncio.wait_for(_ca_echo(reader, writer), timeout)
            except asyncio.TimeoutError:
                state.update(reachable=False, error=f"no answer to a CA echo within "
                             f"{timeout * 1000:.0f} ms")
                return state
            except (OSError, asyncio.IncompleteReadError) as exc:
                state.update(reachable=False, error=str(exc) or type(exc).__name__)
                return state
            finally:
                if writer is not None:
                    writer.close()
            state["reachable"] = True
            return state

        found = list(
            await asyncio.gather(*(probe(h, p) for h, p in self.config.epics_addresses))
        )
        self._probed = (time.monotonic(), found)
        return found
