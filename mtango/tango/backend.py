"""The Tango backend: what the rc3 routes ask of a control system, as plain data.

One instance per worker process, created after the fork (PyTango objects must not cross it).

Why a thread pool and plain ``tango.DeviceProxy`` rather than PyTango's asyncio green mode: the
green mode is the same blocking C++ call run in a thread pool, bound to the first event loop it
sees, and in PyTango 10 some of its calls return futures and others do not. Running the blocking
calls ourselves gives one explicit pool, a per-device limit on how many of its threads one device
may hold (a slow or dead device cannot starve the others), and one place where ``DevFailed`` turns
into ``ApiError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import re
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import tango

from mtango.cache import AsyncLRUCache, SingleFlight
from mtango.config import Config, ConfigError, normalize_tango_host
from mtango.errors import (
    ApiError,
    ErrorEntry,
    FailureKind,
    bad_request,
    failure_body,
    forbidden,
    from_devfailed,
)
from mtango.jsonenc import to_jsonable
from mtango.tango import convert, writes

T = TypeVar("T")


# A request may make several Tango calls (build a proxy, read, fetch enum labels); all of them
# share one deadline, ``tango_timeout_ms`` after the request began, plus this margin so that
# PyTango's own timeout, when it fires, is what the client sees (its error names the device).
DEADLINE_MARGIN_S = 0.25
# After a call to a device or database ran into the deadline, further calls to it fail at once for
# this long; then one call at a time is let through as a probe, the others still failing at once,
# until a probe gets an answer. Measured before: a frozen device server held each of 24 queued
# requests 3 s in turn (the last answered after 39 s); a frozen database held calls 9 to 81 s,
# because cppTango reconnects and retries whatever timeout the client set.
HUNG_RETRY_S = 1.0

_deadline: ContextVar[float | None] = ContextVar("tango_deadline", default=None)


class _Target:
    """One device (or database): threads it holds, and whether it is known to hang."""

    __slots__ = ("semaphore", "users", "hung_since", "retry_at", "probing")

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0  # calls waiting for or holding a thread, and threads still running
        self.hung_since: float | None = None
        self.retry_at = 0.0
        self.probing = False


class _Targets:
    """At most ``limit`` threads per device, kept until the thread really returns; a device that
    hangs fails fast while one probe at a time finds out whether it is back.

    A call abandoned at its deadline keeps its thread, and its share of the device's threads, until
    PyTango returns: a hanging device can never hold more than ``limit`` of the pool.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._targets: dict[Hashable, _Target] = {}

    def hung(self) -> dict[Hashable, float]:
        """Targets currently failing fast, with the monotonic time they were first found hung."""
        return {k: t.hung_since for k, t in self._targets.items() if t.hung_since is not None}

    def _release(self, key: Hashable, target: _Target) -> None:
        target.users -= 1
        if target.users == 0 and target.hung_since is None:
            self._targets.pop(key, None)

    async def run(
        self, key: Hashable, executor: ThreadPoolExecutor, call: Callable[[], T], timeout: float,
        hung: Callable[[float], ApiError], timed_out: Callable[[], ApiError],
    ) -> T:
        """``call()`` in ``executor`` within the device's share of it, answered within
        ``timeout``. The thread's outcome reaches the loop in one hop (``answered``) and wakes
        this task once: ``run_in_executor`` + ``shield`` + ``wait_for`` took about eight turns
        of the event loop per call (strace: 12 ``epoll_pwait`` per live read on one connection)."""
        loop = asyncio.get_running_loop()
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = _Target(self.limit)
        probe = False
        if target.hung_since is not None:
            if target.probing or loop.time() < target.retry_at:
                raise hung(loop.time() - target.hung_since)
            target.probing = probe = True
        target.users += 1
        thread_started = False
        try:
            started = loop.time()
            if target.semaphore.locked():
                try:
                    await asyncio.wait_for(target.semaphore.acquire(), timeout)
                except asyncio.TimeoutError:
                    # Queued behind the device's other calls: busy, not proven hung (a slow
                    # device that answers keeps its threads busy too). A probe stuck here
                    # re-arms the wait.
                    if target.hung_since is not None:
                        self._hang(target, loop)
                    raise timed_out() from None
            else:
                await target.semaphore.acquire()  # free: taken at once, no turn of the loop
            waiter: asyncio.Future[T] = loop.create_future()

            def answered(done: concurrent.futures.Future[T]) -> None:
                # On the loop, whatever happened to the caller: the thread is free again.
                target.semaphore.release()
                self._release(key, target)
                if done.cancelled():  # the pool was shut down before the call ran
                    waiter.cancel()
                elif waiter.done():
                    done.exception()  # retrieved: an abandoned call's failure is not logged
                elif (error := done.exception()) is not None:
                    waiter.set_exception(error)
                else:
                    waiter.set_result(done.result())

            try:
                submitted = executor.submit(call)
            except RuntimeError:  # the pool is shut down: the worker is stopping
                target.semaphore.release()
                raise _closed() from None

            def hand_over(done: concurrent.futures.Future[T]) -> None:
                # In the pool's thread. A loop already closed (the worker has stopped): dropped.
                try:
                    loop.call_soon_threadsafe(answered, done)
                except RuntimeError:
                    pass

            submitted.add_done_callback(hand_over)
            thread_started = True
            remaining = max(timeout - (loop.time() - started), 0)
            timer = loop.call_later(remaining, _expire, waiter)
            try:
                result = await waiter
            except _Expired:
                self._hang(target, loop)
                raise timed_out() from None
            except tango.DevFailed as exc:
                if _is_timeout(exc):
                    self._hang(target, loop)
                elif probe:
                    target.hung_since = None  # it answered, if with an error: it is back
                raise
            finally:
                timer.cancel()
            if probe or target.hung_since is not None:
                target.hung_since = None
            return result
        finally:
            if probe:
                target.probing = False
            if not thread_started:
                self._release(key, target)

    @staticmethod
    def _hang(target: _Target, loop: asyncio.AbstractEventLoop) -> None:
        if target.hung_since is None:
            target.hung_since = loop.time()
        target.retry_at = loop.time() + HUNG_RETRY_S


def _closed() -> ApiError:
    return ApiError(ErrorEntry("TangoBackendClosed", "the Tango backend is not running", "ERR",
                               "TangoBackend.call"), 503)


class _Expired(Exception):
    """A call's deadline passed before its thread answered."""


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


def _is_timeout(exc: tango.DevFailed) -> bool:
    return any("TIMEDOUT" in str(e.reason).upper() or "TIMEOUT" in str(e.reason).upper()
               for e in exc.args)


@dataclass(frozen=True)
class WriteOutcome:
    """What a write did. ``body`` is what the route answers (``None``: nothing, 204); the audit
    gets plain JSON: ``before`` (the value before the write, ``None`` when unknown), ``sent`` (the
    value or argin written, converted, in the shape reads answer it) and ``after`` (the value read
    back or the command's output; ``None`` when not read). Writes of several attributes or
    properties give ``{name: value}`` for each of the three."""

    body: Any
    before: Any = None
    sent: Any = None
    after: Any = None


class TangoBackend:
    def __init__(
        self, config: Config, on_call: Callable[[str, bool], None] | None = None
    ) -> None:
        self.config = config
        self.on_call = on_call  # told of every Tango call and whether it failed (metrics)
        self.allowed_hosts = config.allowed_tango_hosts
        self._host_keys: dict[tuple[str, str], str] = {}
        self.devices: AsyncLRUCache[tango.DeviceProxy] = AsyncLRUCache(
            "devices", config.device_cache_size
        )
        self.databases: AsyncLRUCache[tango.Database] = AsyncLRUCache(
            "databases", max(8, len(self.allowed_hosts))
        )
        # An attribute's info dict and PyTango's AttributeInfoListEx it came from (writes hand the
        # latter to PyTango, which otherwise asks the device for it before every write).
        self.attributes: AsyncLRUCache[tuple[dict[str, Any], Any]] = AsyncLRUCache(
            "attributes", config.attribute_cache_size, ttl=config.attribute_cache_ttl
        )
        self.reads = SingleFlight(detached=False)
        self.targets = _Targets(config.tango_calls_per_device)
        self.timeout = config.tango_timeout_ms / 1000
        self._executor: ThreadPoolExecutor | None = None
        self._db_names: dict[str, str] = {}  # database device name per Tango host

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.config.tango_threads, thread_name_prefix="tango")
        if self.failover:
            # PyTango fails over to the next host only for the TANGO_HOST of the process: in
            # tango.Database() and in device names without a host, both of which read it (checked
            # with PyTango 10.3: tango.Database(h, p) and tango://h1:p1,h2:p2/... stay on the first
            # host). Set here, in the worker, before its first Tango call.
            os.environ["TANGO_HOST"] = ",".join(self.config.failover_tango_hosts)

    @property
    def failover(self) -> str:
        """The key of the database with fail-over hosts (TANGO_HOST's first host), or ``""``."""
        hosts = self.config.failover_tango_hosts
        return hosts[0] if len(hosts) > 1 else ""

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def clear_devices(self) -> None:
        """Forget every device and database proxy; the next request builds them anew."""
        self.devices.clear()
        self.databases.clear()

    # -- hosts -----------------------------------------------------------------------------------

    def host_key(self, host: str, port: str) -> str:
        """Validate a database named in a URL; refuse what is not allowed, before connecting."""
        known = self._host_keys.get((host, port))
        if known is not None:  # every request names its database: 4 us saved each (timeit)
            return known
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise bad_request(f"port {port!r} is not a TCP port number", "BadPort")
        key = ""  # a host name with "," or ":" is in no allow-list: refused like any other
        if not any(c in ",:" for c in host):
            try:
                key = self.config.canonical_tango_host(normalize_tango_host(f"{host}:{port}"))
            except ConfigError as exc:
                raise bad_request(str(exc), "BadHost") from exc
        if key not in self.allowed_hosts:
            raise forbidden(
                f"Tango host {host}:{port} is not in this bridge's allow-list (tango_hosts)",
                "TangoHostNotAllowed",
            )
        if len(self._host_keys) < 256:  # allowed ones only; spellings are the client's choice
            self._host_keys[(host, port)] = key
        return key

    def hosts(self) -> list[str]:
        """Allowed databases, the configured TANGO_HOST first."""
        return list(self.config.effective_tango_hosts)

    # -- plumbing --------------------------------------------------------------------------------

    def begin_request(self) -> None:
        """Start the deadline shared by every Tango call of the current request (task)."""
        _deadline.set(asyncio.get_running_loop().time() + self.timeout + DEADLINE_MARGIN_S)

    async def _call(self, key: Hashable, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking PyTango call in the pool, within the device's share of it and within
        the request's deadline (whatever PyTango does underneath: reconnections, retries)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args)
        deadline = _deadline.get()
        budget = self.timeout + DEADLINE_MARGIN_S
        if deadline is not None:
            budget = min(budget, deadline - loop.time())
        what = _target_name(key)
        try:
            if self._executor is None:
                raise _closed()
            result = await self.targets.run(
                key, self._executor, call, max(budget, 0.0),
                hung=lambda ago: _timeout_error(
                    f"{what} did not answer within {self.config.tango_timeout_ms} ms "
                    f"{ago:.1f} s ago; requests fail at once until a probe finds it back",
                    "TangoBackend.hung"),
                timed_out=lambda: _timeout_error(
                    f"{what} did not answer within {self.config.tango_timeout_ms} ms",
                    "TangoBackend.deadline"),
            )
        except tango.DevFailed as exc:
            if self.on_call is not None:
                self.on_call("tango", False)
            raise from_devfailed(exc) from None
        except ApiError:
            if self.on_call is not None:
                self.on_call("tango", False)
            raise
        if self.on_call is not None:
            self.on_call("tango", True)
        return result

    async def call(self, key: Hashable, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)``, a blocking PyTango call about ``key`` (``(host, device)`` in lower
        case), as every call of this backend runs: in the pool, within the device's share of it
        and the current deadline (``begin_request``); ``DevFailed`` becomes ``ApiError``."""
        return await self._call(key, fn, *args)

    async def database(self, host: str) -> tango.Database:
        def build() -> tango.Database:
            if host == self.failover:
                db = tango.Database()  # TANGO_HOST, every host of it (see start)
            else:
                name, port = host.rsplit(":", 1)
                db = tango.Database(name, int(port))
            db.set_timeout_millis(self.config.tango_timeout_ms)
            self._db_names[host] = db.dev_name()
            return db

        return await self.databases.get(host, lambda: self._call(("db", host), build))

    async def proxy(self, host: str, device: str) -> tango.DeviceProxy:
        key = (host, device.lower())

        def build() -> tango.DeviceProxy:
            # Without a host, the name is looked up through TANGO_HOST and its fail-over hosts.
            name = device if host == self.failover else f"tango://{host}/{device}"
            proxy = tango.DeviceProxy(name)
            proxy.set_timeout_millis(self.config.tango_timeout_ms)
            return proxy

        return await self.devices.get(key, lambda: self._call(key, build))

    async def _device_call(self, host: str, device: str, method: str, *args: Any) -> Any:
        proxy = await self.proxy(host, device)
        return await self._call((host, device.lower()), getattr(proxy, method), *args)

    async def _db_command(self, host: str, command: str, *args: Any) -> Any:
        """Ask the database device. Always ``command_inout``: PyTango 10.3's convenience methods
        (``get_info``, ``get_device_info``, ``get_device_property``, ...) keep the GIL while they
        wait, so a frozen database froze every thread of the worker, its event loop included
        (py-spy: the loop stuck starting a pool thread that waited for the GIL held by a thread in
        ``Database::get_info``); ``command_inout`` lets go of it while waiting."""
        db = await self.database(host)
        return await self._call(("db", host), db.command_inout, command, *args)

    # -- database ----------------------------------------------------------------------------------

    async def database_info(self, host: str) -> dict[str, Any]:
        info = await self._db_command(host, "DbInfo")
        return {"name": self._db_names[host], "info": [str(line) for line in info]}

    async def device_names(self, host: str, wildcard: str = "*") -> list[str]:
        names = await self._db_command(host, "DbGetDeviceWideList", wildcard)
        return list(names)

    async def device_info(self, host: str, device: str) -> dict[str, Any]:
        return convert.device_info(await self._db_command(host, "DbGetDeviceInfo", device))

    async def device_properties(self, host: str, device: str) -> dict[str, list[str]]:
        await self.proxy(host, device)  # unknown devices fail here, not with an empty list
        names = list(await self._db_command(host, "DbGetDevicePropertyList", [device, "*"]))
        if not names:
            return {}
        reply = await self._db_command(host, "DbGetDeviceProperty", [device, *names])
        values = convert.device_properties(reply)
        return {name: values.get(name, []) for name in names}

    async def device_property(self, host: str, device: str, name: str) -> list[str]:
        await self.proxy(host, device)
        reply = await self._db_command(host, "DbGetDeviceProperty", [device, name])
        return convert.device_properties(reply).get(name, [])

    async def attribute_properties(
        self, host: str, device: str, attribute: str
    ) -> dict[str, list[str]]:
        info = await self.attribute_info(host, device, attribute)
        reply = await self._db_command(
            host, "DbGetDeviceAttributeProperty2", [device, info["name"]])
        found = convert.attribute_properties(reply)
        props = found.get(info["name"])
        if not props:
            props = next(iter(found.values()), {})
        return dict(props)

    # -- device ------------------------------------------------------------------------------------

    async def device_state(self, host: str, device: str) -> tuple[str, str]:
        """State and status; like the Java server, a device that cannot answer is UNKNOWN."""
        try:
            state, status = await self._device_call(
                host, device, "read_attributes", ["State", "Status"]
            )
        except ApiError as exc:
            if exc.kind is FailureKind.NOT_FOUND and _names_device(exc):
                raise
            return "UNKNOWN", f"Failed to read state&status from {device}"
        if state.has_failed or status.has_failed:
            return "UNKNOWN", f"Failed to read state&status from {device}"
        return tango.DevState(int(state.value)).name, str(status.value)

    # -- attributes --------------------------------------------------------------------------------

    async def attribute_infos(self, host: str, device: str) -> list[dict[str, Any]]:
        infos = await self._device_call(host, device, "attribute_list_query_ex")
        return [convert.attribute_info(i) for i in infos]

    async def attribute_info(self, host: str, device: str, attribute: str) -> dict[str, Any]:
        return (await self._attribute_config(host, device, attribute))[0]

    async def _attribute_config(
        self, host: str, device: str, attribute: str
    ) -> tuple[dict[str, Any], Any]:
        """The info dict and PyTango's ``AttributeInfoEx`` of an attribute (cached)."""
        key = (host, device.lower(), attribute.lower())

        async def fetch() -> tuple[dict[str, Any], Any]:
            infos = await self._device_call(host, device, "get_attribute_config_ex", [attribute])
            return convert.attribute_info(infos[0]), infos

        info, infos = await self.attributes.get(key, fetch)
        return info, infos[0]

    async def _enum_labels(self, host: str, device: str, da: tango.DeviceAttribute) -> list[str]:
        if da.type != tango.CmdArgType.DevEnum or da.has_failed:
            return []
        return (await self.attribute_info(host, device, da.name))["enum_label"]

    async def read_attribute(self, host: str, device: str, attribute: str) -> dict[str, Any]:
        """One attribute's value object; concurrent identical reads share one device call."""
        key = (host, device.lower(), attribute.lower())

        async def read() -> dict[str, Any]:
            da = await self._device_call(host, device, "read_attribute", attribute)
            return convert.value_object(da, await self._enum_labels(host, device, da))

        return await self.reads.run(key, read)

    async def read_attributes(
        self, host: str, device: str, attributes: list[str]
    ) -> list[dict[str, Any]]:
        """Several values in one device call; a failed attribute is a FAILURE item in the list.

        Tango refuses the whole call when one name is unknown; then each attribute is read on its
        own so the others still get their values.
        """
        key = (host, device.lower(), tuple(a.lower() for a in attributes))

        async def read() -> list[dict[str, Any]]:
            try:
                das = await self._device_call(host, device, "read_attributes", attributes)
            except ApiError as exc:
                if exc.kind is not FailureKind.NOT_FOUND or _names_device(exc):
                    raise
                return list(await asyncio.gather(*(self._read_or_failure(host, device, a)
                                                   for a in attributes)))
            return [
                convert.value_object(da, await self._enum_labels(host, device, da)) for da in das
            ]

        return await self.reads.run(key, read)

    async def _read_or_failure(self, host: str, device: str, attribute: str) -> dict[str, Any]:
        try:
            return await self.read_attribute(host, device, attribute)
        except ApiError as exc:
            return failure_body(exc.entries, name=attribute)

    async def attribute_history(
        self, host: str, device: str, attribute: str, depth: int
    ) -> list[dict[str, Any]]:
        info = await self.attribute_info(host, device, attribute)
        items = await self._device_call(host, device, "attribute_history", attribute, depth)
        labels = info["enum_label"] if info["data_type"] == "DevEnum" else []
        return [convert.history_item(info["name"], item, labels) for item in items]

    # -- commands ----------------------------------------------------------------------------------

    async def commands(self, host: str, device: str) -> list[dict[str, Any]]:
        infos = await self._device_call(host, device, "command_list_query")
        return [convert.command_info(i) for i in infos]

    async def command_info(self, host: str, device: str, command: str) -> dict[str, Any]:
        info = await self._device_call(host, device, "command_query", command)
        return convert.command_info(info)

    async def command_history(
        self, host: str, device: str, command: str, depth: int
    ) -> list[dict[str, Any]]:
        info = await self.command_info(host, device, command)
        items = await self._device_call(host, device, "command_history", command, depth)
        return [convert.command_history_item(info["cmd_name"], item) for item in items]

    # -- writes ------------------------------------------------------------------------------------
    #
    # Every write is one device (or database) call, never retried; the value before is read first
    # (for the audit), and the value after is read by a call of its own, never shared with reads
    # that began before the write. After a write (or a command, which may change anything), reads
    # of the device that are under way take no new callers: a read that begins after the write
    # asks the device.

    async def write_attribute(
        self, host: str, device: str, attribute: str, raw: list[str] | Any, *,
        from_json: bool, wait: bool = True,
    ) -> WriteOutcome:
        """``PUT .../attributes/{attr}/value``: ``raw`` is the ``v`` query values (a list of
        strings) or, ``from_json``, the decoded JSON body (``writes.attribute_value`` says how
        they are read). The body is the value read back, in the shape of a read (or its FAILURE
        item, when the write succeeded and the read back failed); ``wait=False`` (``?async=true``)
        answers ``None`` once the device has taken the write, without reading back."""
        info, config = await self._attribute_config(host, device, attribute)
        value = writes.attribute_value(info, raw, from_json=from_json)
        name = info["name"]
        sent = writes.sent_value(info, value)
        before = await self._values_before(host, device, [name])
        try:
            await self._device_call(host, device, "write_attribute", config, value)
        finally:
            self._written(host, device)
        if not wait:
            return WriteOutcome(None, before[name], sent)
        (body,) = await self._read_back(host, device, [name])
        return WriteOutcome(body, before[name], sent, _value_of(body))

    async def write_attributes(
        self, host: str, device: str, values: dict[str, list[str]], wait: bool = True
    ) -> WriteOutcome:
        """``PUT .../attributes/value?a=1&b=2``: each name's query values (repeated keys give a
        spectrum). Every value is converted first; one that cannot be (or an unknown or read-only
        attribute) is a FAILURE item and the others are written, in one device call, then read
        back in one call. The body has one value object or FAILURE item per name, in order (a
        write the device refused is the device's FAILURE item).

        ``wait=False`` answers ``None`` without reading back; as it cannot report one attribute's
        failure in an empty answer, any attribute that cannot be converted fails the whole request
        before anything is written (its ApiError lists every such attribute).
        """
        names = list(values)
        if not names:
            raise bad_request("no attribute to write (?name=value)", "MissingValue")
        configs = await asyncio.gather(
            *(self._attribute_config(host, device, n) for n in names), return_exceptions=True)
        failures: dict[str, ApiError] = {}
        pending: list[tuple[str, dict[str, Any], Any, Any]] = []  # name, info, config, value
        for name, found in zip(names, configs, strict=True):
            if isinstance(found, ApiError) and found.kind is FailureKind.NOT_FOUND \
                    and not _names_device(found):
                failures[name] = found
                continue
            if isinstance(found, BaseException):
                raise found
            info, config = found
            try:
                pending.append((name, info, config, writes.attribute_value(info, values[name],
                                                                           from_json=False)))
            except ApiError as exc:
                failures[name] = exc
        if failures and not wait:
            first = next(iter(failures.values()))
            raise ApiError([e for exc in failures.values() for e in exc.entries],
                           status=first.status, kind=first.kind)
        written = [p[1]["name"] for p in pending]
        sent = {p[1]["name"]: writes.sent_value(p[1], p[3]) for p in pending}
        before = await self._values_before(host, device, written) if written else {}
        if pending:
            try:
                await self._device_call(host, device, "write_attributes",
                                        [(config, value) for _, _, config, value in pending])
            except ApiError as exc:
                refused = _refused_attributes(exc, written)
                if refused is None or not wait:
                    raise
                for name, info, _, _ in pending:
                    if info["name"].lower() in refused:
                        failures[name] = exc
            finally:
                self._written(host, device)
        if not wait:
            return WriteOutcome(None, before, sent)
        done = [p for p in pending if p[0] not in failures]
        read = await self._read_back(host, device, [p[1]["name"] for p in done])
        by_name = {p[0]: body for p, body in zip(done, read, strict=True)}
        body = [by_name[n] if n in by_name else failure_body(failures[n].entries, name=n)
                for n in names]
        after = {p[1]["name"]: _value_of(by_name[p[0]]) for p in done}
        return WriteOutcome(body, before, sent, after)

    async def _values_before(self, host: str, device: str, names: list[str]) -> dict[str, Any]:
        """The values of ``names`` now, for the audit (``None`` where a read fails). A device that
        does not answer fails the write here, before anything is sent."""
        try:
            if len(names) == 1:
                objects = [await self.read_attribute(host, device, names[0])]
            else:
                objects = await self.read_attributes(host, device, names)
        except ApiError as exc:
            if exc.kind is not FailureKind.FAILED:
                raise
            return dict.fromkeys(names)
        return {name: _value_of(obj) for name, obj in zip(names, objects, strict=True)}

    async def _read_back(self, host: str, device: str, names: list[str]) -> list[dict[str, Any]]:
        """Value objects of ``names`` read after a write, in a call of their own; the write has
        happened, so a failed read is a FAILURE item, never an exception."""
        if not names:
            return []
        try:
            das = await self._device_call(host, device, "read_attributes", names)
            return [convert.value_object(da, await self._enum_labels(host, device, da))
                    for da in das]
        except ApiError as exc:
            return [failure_body(exc.entries, name=n) for n in names]

    def _written(self, host: str, device: str) -> None:
        """Reads of ``device`` under way take no new callers: they may hold the old value."""
        dev = device.lower()
        self.reads.forget(lambda key: isinstance(key, tuple) and key[:2] == (host, dev))

    async def run_command(
        self, host: str, device: str, command: str, body: bytes, content_type: str | None,
        wait: bool = True,
    ) -> WriteOutcome:
        """``PUT .../commands/{cmd}``: the argin from the body (``writes.command_argin``); answers
        ``{"name", "output"}`` (no ``output`` for a DevVoid out_type; an output of 0 or ``""`` is
        kept). ``wait=False`` (``?async=true``) sends the command without waiting for it
        (``command_inout_asynch``, fire and forget): ``None``, and a failure of the command itself
        is not seen."""
        info = await self.command_info(host, device, command)
        argin = writes.command_argin(info, body, content_type)
        name, void_in = info["cmd_name"], info["in_type"] == "DevVoid"
        sent = None if void_in else writes.sent_argin(info, argin)
        try:
            if wait:
                output = await self._device_call(
                    host, device, "command_inout", *((name,) if void_in else (name, argin)))
            else:
                await self._device_call(host, device, "command_inout_asynch", name, argin, True)
        finally:
            self._written(host, device)
        if not wait:
            return WriteOutcome(None, None, sent)
        result: dict[str, Any] = {"name": name}
        if info["out_type"] != "DevVoid":
            result["output"] = convert.command_output(output, info["out_type"])
        return WriteOutcome(result, None, sent, to_jsonable(result.get("output")))

    # -- database properties -----------------------------------------------------------------------

    async def put_device_properties(
        self, host: str, device: str, props: dict[str, list[str]]
    ) -> WriteOutcome:
        """``PUT .../properties?p1=v&p2=a&p2=b`` (or one property): stores each property with its
        values in one database call (properties not named are left as they are). The body is
        ``[{"name", "values"}]`` read back, in order."""
        if not props:
            raise bad_request("no property to set (?name=value)", "MissingValue")
        checked = {name: writes.check_property(name, values) for name, values in props.items()}
        await self.proxy(host, device)  # an unknown device fails here: no ghost properties
        names = list(checked)
        before = await self._device_property_values(host, device, names)
        argin = [device, str(len(checked))]
        for name, values in checked.items():
            argin += [name, str(len(values)), *values]
        await self._db_command(host, "DbPutDeviceProperty", argin)
        after = await self._device_property_values(host, device, names)
        body = [{"name": n, "values": after[n]} for n in names]
        return WriteOutcome(body, before, checked, after)

    async def delete_device_property(self, host: str, device: str, name: str) -> WriteOutcome:
        """``DELETE .../properties/{name}``: the body is ``None`` (204); deleting a property that
        does not exist succeeds (``before`` is then ``{name: []}``)."""
        writes.check_property(name, [""])
        await self.proxy(host, device)
        before = await self._device_property_values(host, device, [name])
        await self._db_command(host, "DbDeleteDeviceProperty", [device, name])
        return WriteOutcome(None, before)

    async def _device_property_values(
        self, host: str, device: str, names: list[str]
    ) -> dict[str, list[str]]:
        reply = await self._db_command(host, "DbGetDeviceProperty", [device, *names])
        found = {k.lower(): v for k, v in convert.device_properties(reply).items()}
        return {name: found.get(name.lower(), []) for name in names}

    async def put_attribute_property(
        self, host: str, device: str, attribute: str, name: str, values: list[str]
    ) -> WriteOutcome:
        """``PUT .../attributes/{attr}/properties/{prop}?value=v``: stores the property in the
        database; the body is ``{prop: values}`` read back. A running device reads attribute
        properties when it starts: to change its configuration now, use ``set_attribute_info``."""
        checked = writes.check_property(name, values)
        info = await self.attribute_info(host, device, attribute)
        attr = info["name"]
        before = await self._attribute_property_values(host, device, attr, name)
        await self._db_command(host, "DbPutDeviceAttributeProperty2",
                               [device, "1", attr, "1", name, str(len(checked)), *checked])
        self.attributes.discard((host, device.lower(), attribute.lower()))
        after = await self._attribute_property_values(host, device, attr, name)
        return WriteOutcome(after, before, {name: checked}, after)

    async def delete_attribute_property(
        self, host: str, device: str, attribute: str, name: str
    ) -> WriteOutcome:
        """``DELETE .../attributes/{attr}/properties/{prop}``: ``None`` (204), also when there was
        no such property."""
        writes.check_property(name, [""])
        info = await self.attribute_info(host, device, attribute)
        attr = info["name"]
        before = await self._attribute_property_values(host, device, attr, name)
        await self._db_command(host, "DbDeleteDeviceAttributeProperty", [device, attr, name])
        self.attributes.discard((host, device.lower(), attribute.lower()))
        return WriteOutcome(None, before)

    async def _attribute_property_values(
        self, host: str, device: str, attribute: str, name: str
    ) -> dict[str, list[str]]:
        """``{name: values}`` of one attribute property (``[]`` when it has none), named as the
        database spells it."""
        reply = await self._db_command(host, "DbGetDeviceAttributeProperty2", [device, attribute])
        found = convert.attribute_properties(reply)
        props = next((p for a, p in found.items() if a.lower() == attribute.lower()), {})
        spelled = next((p for p in props if p.lower() == name.lower()), name)
        return {spelled: props.get(spelled, [])}

    async def set_attribute_info(
        self, host: str, device: str, attribute: str, body: dict[str, Any]
    ) -> WriteOutcome:
        """``PUT .../attributes/{attr}/info``: sets the fields of ``body`` that a client may set
        (``writes.attribute_config_changes``: label, description, units, format, min/max value,
        alarms, events, enum labels) on the running device, from its current configuration (not
        a cached one), and answers the new info dict. ``before``/``sent``/``after`` hold only the
        changed fields (``{"label": ..., "alarms.max_alarm": ...}``)."""
        infos = await self._device_call(host, device, "get_attribute_config_ex", [attribute])
        config = infos[0]
        current = convert.attribute_info(config)
        changes = writes.attribute_config_changes(current, body)
        key = (host, device.lower(), attribute.lower())
        if changes:
            writes.apply_attribute_config(config, changes)
            try:
                await self._device_call(host, device, "set_attribute_config", config)
            finally:
                self.attributes.discard(key)
                self._written(host, device)  # enum labels of reads under way may be the old ones
        info = await self.attribute_info(host, device, attribute)
        return WriteOutcome(info, {p: writes.config_field(current, p) for p in changes}, changes,
                            {p: writes.config_field(info, p) for p in changes})

    # -- pipes -------------------------------------------------------------------------------------

    async def pipes(self, host: str, device: str) -> list[str]:
        """PyTango 10 has no client pipe API: every device lists no pipes."""
        await self.proxy(host, device)
        return []

    async def read_pipe(self, host: str, device: str, pipe: str) -> dict[str, Any]:
        await self.proxy(host, device)
        raise ApiError(
            ErrorEntry(
                "API_PipeNotSupported",
                f"Pipe {pipe} of {device} cannot be read: pipes are not supported by the Tango "
                f"version in use (PyTango {tango.__version__} has no pipe API)",
                "ERR",
                "TangoBackend.read_pipe",
            ),
            kind=FailureKind.FAILED,
        )


def _target_name(key: Hashable) -> str:
    if isinstance(key, tuple) and key and key[0] == "db":
        return f"Tango database {key[1]}"
    if isinstance(key, tuple) and len(key) == 2:
        return f"Device {key[1]} (database {key[0]})"
    return str(key)


def _timeout_error(description: str, origin: str) -> ApiError:
    """A call cut off by the bridge's deadline: Tango's own reason, so clients treat it alike."""
    return ApiError(ErrorEntry("API_DeviceTimedOut", description, "ERR", origin),
                    status=503, kind=FailureKind.UNAVAILABLE)


def _value_of(body: dict[str, Any]) -> Any:
    """The plain JSON value of a value object (``None`` for a FAILURE item)."""
    if body.get("quality") == "FAILURE":
        return None
    return to_jsonable(body.get("value"))


_OBJECTS = re.compile(r"object\(s\) (.+)$")


def _refused_attributes(exc: ApiError, names: list[str]) -> set[str] | None:
    """The attributes a ``write_attributes`` call says the device refused, lower-cased; ``None``
    when the failure is not about attributes (the device failed as a whole).

    cppTango reports them in a NamedDevFailedList, which PyTango 10 turns into one DevFailed
    whose description ends ``..., object(s) a, b``: the per-attribute errors are lost, the names
    are read from that text (attribute names hold no comma or space). If they cannot be read,
    every attribute counts as refused.
    """
    entries = [e for e in exc.entries if e.reason == "API_AttributeFailed"]
    if not entries:
        return None
    wanted = {n.lower() for n in names}
    refused: set[str] = set()
    for entry in entries:
        match = _OBJECTS.search(entry.description)
        if match:
            refused |= {n.strip().lower() for n in match.group(1).split(",")} & wanted
    return refused or wanted


def _names_device(exc: ApiError) -> bool:
    """True when a not-found failure is about the device itself, not one of its members."""
    return any(e.reason in ("DB_DeviceNotDefined", "API_DeviceNotDefined") for e in exc.entries)
