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
import functools
import os
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
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
from mtango.tango import convert

T = TypeVar("T")


class _DeviceLimiter:
    """At most ``limit`` concurrent blocking calls per device; entries vanish when unused."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[Hashable, list[Any]] = {}  # key -> [semaphore, users]

    async def run(self, key: Hashable, call: Callable[[], Any]) -> Any:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = [asyncio.Semaphore(self.limit), 0]
        slot[1] += 1
        try:
            async with slot[0]:
                return await call()
        finally:
            slot[1] -= 1
            if slot[1] == 0:
                del self._slots[key]


class TangoBackend:
    def __init__(
        self, config: Config, on_call: Callable[[str, bool], None] | None = None
    ) -> None:
        self.config = config
        self.on_call = on_call  # told of every Tango call and whether it failed (metrics)
        self.allowed_hosts = config.allowed_tango_hosts
        self.devices: AsyncLRUCache[tango.DeviceProxy] = AsyncLRUCache(
            "devices", config.device_cache_size
        )
        self.databases: AsyncLRUCache[tango.Database] = AsyncLRUCache(
            "databases", max(8, len(self.allowed_hosts))
        )
        self.attributes: AsyncLRUCache[dict[str, Any]] = AsyncLRUCache(
            "attributes", config.attribute_cache_size, ttl=config.attribute_cache_ttl
        )
        self.reads = SingleFlight()
        self._limiter = _DeviceLimiter(config.tango_calls_per_device)
        self._executor: ThreadPoolExecutor | None = None

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
        return key

    def hosts(self) -> list[str]:
        """Allowed databases, the configured TANGO_HOST first."""
        return list(self.config.effective_tango_hosts)

    # -- plumbing --------------------------------------------------------------------------------

    async def _call(self, key: Hashable, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking PyTango call in the pool, within the device's share of it."""
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args)
        try:
            result = await self._limiter.run(
                key, lambda: loop.run_in_executor(self._executor, call)
            )
        except tango.DevFailed as exc:
            if self.on_call is not None:
                self.on_call("tango", False)
            raise from_devfailed(exc) from None
        if self.on_call is not None:
            self.on_call("tango", True)
        return result

    async def database(self, host: str) -> tango.Database:
        def build() -> tango.Database:
            if host == self.failover:
                db = tango.Database()  # TANGO_HOST, every host of it (see start)
            else:
                name, port = host.rsplit(":", 1)
                db = tango.Database(name, int(port))
            db.set_timeout_millis(self.config.tango_timeout_ms)
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

    async def _db_call(self, host: str, method: str, *args: Any) -> Any:
        db = await self.database(host)
        return await self._call(("db", host), getattr(db, method), *args)

    # -- database ----------------------------------------------------------------------------------

    async def database_info(self, host: str) -> dict[str, Any]:
        info = await self._db_call(host, "get_info")
        name = await self._db_call(host, "dev_name")
        return {"name": name, "info": info.split("\n")}

    async def device_names(self, host: str, wildcard: str = "*") -> list[str]:
        names = await self._db_call(host, "command_inout", "DbGetDeviceWideList", wildcard)
        return list(names)

    async def device_info(self, host: str, device: str) -> dict[str, Any]:
        info = await self._db_call(host, "get_device_info", device)
        return convert.device_info(info)

    async def device_properties(self, host: str, device: str) -> dict[str, list[str]]:
        await self.proxy(host, device)  # unknown devices fail here, not with an empty list
        names = list(await self._db_call(host, "get_device_property_list", device, "*"))
        if not names:
            return {}
        values = await self._db_call(host, "get_device_property", device, names)
        return {name: list(values.get(name, [])) for name in names}

    async def device_property(self, host: str, device: str, name: str) -> list[str]:
        await self.proxy(host, device)
        values = await self._db_call(host, "get_device_property", device, [name])
        return list(values.get(name, []))

    async def attribute_properties(
        self, host: str, device: str, attribute: str
    ) -> dict[str, list[str]]:
        info = await self.attribute_info(host, device, attribute)
        found = await self._db_call(host, "get_device_attribute_property", device, [info["name"]])
        props = found.get(info["name"]) or next(iter(found.values()), {})
        return {name: list(values) for name, values in props.items()}

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
        key = (host, device.lower(), attribute.lower())

        async def fetch() -> dict[str, Any]:
            infos = await self._device_call(host, device, "get_attribute_config_ex", [attribute])
            return convert.attribute_info(infos[0])

        return await self.attributes.get(key, fetch)

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


def _names_device(exc: ApiError) -> bool:
    """True when a not-found failure is about the device itself, not one of its members."""
    return any(e.reason in ("DB_DeviceNotDefined", "API_DeviceNotDefined") for e in exc.entries)
