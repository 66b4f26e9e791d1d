"""One configuration object, built once and passed explicitly.

Layers, later ones winning: ``mtango.defaults`` (re-exported as ``conf.py``) <- YAML file <-
environment <- command-line flags.
Validation happens here, once, so the rest of the code can trust the values (a bad port or an
unknown error mode stops the program at start-up with a clear message, not in a request).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from mtango import defaults as _defaults

ERROR_STATUS_MODES = ("rc3", "rc4")


class ConfigError(ValueError):
    """A setting has a value the bridge cannot run with."""


@dataclass(frozen=True)
class Config:
    """Effective settings of one bridge process tree (picklable: workers are spawned with it)."""

    app_base: str = _defaults.app_base
    host: str = _defaults.host
    port: int = _defaults.port
    workers: int = _defaults.workers
    debug: bool = _defaults.debug
    http_request_timeout: float = _defaults.http_request_timeout
    http_keep_alive_timeout: float = _defaults.http_keep_alive_timeout
    tango_host: str = _defaults.tango_host
    tango_hosts: tuple[str, ...] = tuple(_defaults.tango_hosts)
    tango_timeout_ms: int = _defaults.tango_timeout_ms
    tango_threads: int = _defaults.tango_threads
    tango_calls_per_device: int = _defaults.tango_calls_per_device
    history_depth: int = _defaults.history_depth
    tango_poll_ms: int = _defaults.tango_poll_ms
    tango_max_age_ms: int = _defaults.tango_max_age_ms
    events_linger_s: float = _defaults.events_linger_s
    events_queue_size: int = _defaults.events_queue_size
    subscription_idle_s: float = _defaults.subscription_idle_s
    sse_heartbeat_s: float = _defaults.sse_heartbeat_s
    pvws_max_rate_hz: float = _defaults.pvws_max_rate_hz
    shutdown_drain_s: float = _defaults.shutdown_drain_s
    proxies_count: int = _defaults.proxies_count
    device_cache_size: int = _defaults.device_cache_size
    attribute_cache_size: int = _defaults.attribute_cache_size
    attribute_cache_ttl: float = _defaults.attribute_cache_ttl
    error_status: str = _defaults.error_status
    auth: str = _defaults.auth
    auth_realm: str = _defaults.auth_realm
    users_file: str = _defaults.users_file
    writes: str = _defaults.writes
    read_access: str = _defaults.read_access
    audit_log: str = _defaults.audit_log
    cors_origins: tuple[str, ...] = field(
        default_factory=lambda: _as_tuple(_defaults.cors_origins)
    )
    epics_ca_addr_list: tuple[str, ...] = tuple(_defaults.epics_ca_addr_list)
    epics_ca_auto_addr_list: bool = _defaults.epics_ca_auto_addr_list
    epics_ca_server_port: int = _defaults.epics_ca_server_port
    epics_ca_max_array_bytes: int = _defaults.epics_ca_max_array_bytes
    epics_connect_timeout_ms: int = _defaults.epics_connect_timeout_ms
    epics_read_timeout_ms: int = _defaults.epics_read_timeout_ms
    epics_search_retry_ms: int = _defaults.epics_search_retry_ms
    epics_max_age_ms: int = _defaults.epics_max_age_ms
    epics_idle_timeout: float = _defaults.epics_idle_timeout
    epics_dead_timeout: float = _defaults.epics_dead_timeout
    epics_metadata_ttl: float = _defaults.epics_metadata_ttl
    epics_batch_max: int = _defaults.epics_batch_max
    epics_max_searching: int = _defaults.epics_max_searching
    epics_allow: tuple[str, ...] = tuple(_defaults.epics_allow)
    epics_deny: tuple[str, ...] = tuple(_defaults.epics_deny)

    @property
    def failover_tango_hosts(self) -> tuple[str, ...]:
        """The hosts of TANGO_HOST, normalized: one, or several of one database (``h1,h2``)."""
        return tango_host_list(self.tango_host) if self.tango_host else ()

    @property
    def served_tango_host(self) -> str:
        """TANGO_HOST as ``host:port`` (Tango's rule: no port means 10000), its first host when it
        names several; empty: none. The database is known, shown and cached under this name."""
        return self.failover_tango_hosts[0] if self.tango_host else ""

    def canonical_tango_host(self, host: str) -> str:
        """A normalized ``host:port``; any host of TANGO_HOST is its first (one database)."""
        return self.served_tango_host if host in self.failover_tango_hosts else host

    @property
    def effective_tango_hosts(self) -> tuple[str, ...]:
        """Databases the bridge may contact, normalized: the served TANGO_HOST first (if allowed),
        then the rest of the allow-list, sorted. Without an allow-list: just TANGO_HOST."""
        first = self.served_tango_host
        if self.tango_hosts:
            hosts = {self.canonical_tango_host(normalize_tango_host(h)) for h in self.tango_hosts}
        else:
            hosts = {first}
        hosts.discard("")
        return ((first,) if first in hosts else ()) + tuple(sorted(hosts - {first}))

    @property
    def allowed_tango_hosts(self) -> frozenset[str]:
        return frozenset(self.effective_tango_hosts)

    @property
    def epics_configured(self) -> bool:
        """Whether the bridge may send Channel Access traffic at all (safe default: no)."""
        return bool(self.epics_ca_addr_list) or self.epics_ca_auto_addr_list

    @property
    def epics_addresses(self) -> tuple[tuple[str, int], ...]:
        """The search destinations of EPICS_CA_ADDR_LIST as (host, port), default port filled in."""
        return tuple(
            parse_ca_address(a, self.epics_ca_server_port) for a in self.epics_ca_addr_list
        )

    def replace(self, **changes: Any) -> Config:
        return validate(dataclasses.replace(self, **changes))

    def as_dict(self) -> dict[str, Any]:
        """The settings in force (``tango_hosts``: the allow-list that applies, not its default)."""
        values = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        values["tango_hosts"] = list(self.effective_tango_hosts)
        return values


def normalize_tango_host(value: str) -> str:
    """``Host:10000`` and ``host:10000`` name the same database; a missing port means 10000."""
    value = value.strip()
    if not value:
        raise ConfigError("empty Tango host")
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, "10000"
    bad_host = not host or any(c.isspace() or c in ",:/" for c in host)
    if bad_host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"Tango host {value!r} is not of the form host:port")
    return f"{host.lower()}:{int(port)}"


def tango_host_list(value: str) -> tuple[str, ...]:
    """TANGO_HOST's hosts: ``h1:p1,h2:p2`` is one database reachable through either (Tango's
    form for fail-over database servers); each host normalized, in the order given."""
    hosts = tuple(normalize_tango_host(part) for part in value.split(","))
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"TANGO_HOST {value!r} names a host twice")
    return hosts


def parse_ca_address(value: str, default_port: int) -> tuple[str, int]:
    """``host`` or ``host:port`` of an EPICS_CA_ADDR_LIST entry (host names are allowed)."""
    host, sep, port = value.strip().rpartition(":")
    if not sep:
        host, port = value.strip(), str(default_port)
    if not host or any(c.isspace() or c in "/[]" for c in host):
        raise ConfigError(f"EPICS address {value!r} is not of the form host[:port]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"EPICS address {value!r} has no valid port")
    return host, int(port)


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.replace(",", " ").split() if v)
    return tuple(str(v) for v in value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(name: str, raw: Any) -> Any:
    """Turn a YAML or environment value into the type of the field's default."""
    spec = _FIELDS[name]
    if spec.default is not dataclasses.MISSING:
        default = spec.default
    elif spec.default_factory is not dataclasses.MISSING:
        default = spec.default_factory()
    else:  # every Config field has a default or a default factory
        raise TypeError(f"Config.{name} has no default")
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is tuple:
            return _as_tuple(raw)
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: {raw!r} is not a valid {kind.__name__}") from exc


def from_mapping(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """Apply a mapping of setting names to values (unknown names are an error, not ignored)."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    coerced = {k: _coerce(k, v) for k, v in values.items() if v is not None}
    return dataclasses.replace(base or Config(), **coerced)


# The standard EPICS client variables, read under their own names (MTANGO_<SETTING> wins).
EPICS_ENVIRONMENT = {
    "EPICS_CA_ADDR_LIST": "epics_ca_addr_list",
    "EPICS_CA_AUTO_ADDR_LIST": "epics_ca_auto_addr_list",
    "EPICS_CA_SERVER_PORT": "epics_ca_server_port",
    "EPICS_CA_MAX_ARRAY_BYTES": "epics_ca_max_array_bytes",
}


def from_environment(env: Mapping[str, str]) -> dict[str, str]:
    """Settings named by the environment: TANGO_HOST, EPICS_CA_* and MTANGO_<SETTING>."""
    found: dict[str, str] = {}
    if env.get("TANGO_HOST"):
        found["tango_host"] = env["TANGO_HOST"]
    for key, name in EPICS_ENVIRONMENT.items():
        if env.get(key, "").strip():
            found[name] = env[key]
    for name in _FIELDS:
        key = f"MTANGO_{name.upper()}"
        if key in env:
            found[name] = env[key]
    return found


def load_yaml(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as exc:
            # One line, like every other bad setting: the problem and where, not a traceback.
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration file must hold a mapping")
    return data


def load_config(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective configuration from every layer and validate it once."""
    config = Config()
    if config_file:
        config = from_mapping(load_yaml(config_file), config)
    config = from_mapping(from_environment(os.environ if env is None else env), config)
    if overrides:
        config = from_mapping(overrides, config)
    return validate(config)


def validate(config: Config) -> Config:
    problems = []
    if not config.app_base.startswith("/") or config.app_base.endswith("/"):
        problems.append(f"app_base {config.app_base!r} must start and not end with '/'")
    if not 0 <= config.port < 65536:
        problems.append(f"port {config.port} is out of range")
    if config.workers < 1:
        problems.append("workers must be at least 1")
    if config.error_status not in ERROR_STATUS_MODES:
        problems.append(f"error_status must be one of {', '.join(ERROR_STATUS_MODES)}")
    for name in ("tango_timeout_ms", "tango_threads", "tango_calls_per_device", "history_depth",
                 "tango_poll_ms", "events_queue_size"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    if config.tango_max_age_ms < 0:
        problems.append("tango_max_age_ms must not be negative")
    if not 0 <= config.shutdown_drain_s <= 3600:
        problems.append("shutdown_drain_s must be between 0 and 3600")
    if not 0 <= config.proxies_count <= 10:
        problems.append("proxies_count must be between 0 and 10")
    for name in ("events_linger_s", "subscription_idle_s", "sse_heartbeat_s", "pvws_max_rate_hz"):
        if not getattr(config, name) > 0:
            problems.append(f"{name} must be positive")
    for name in ("device_cache_size", "attribute_cache_size"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    for name in ("http_request_timeout", "http_keep_alive_timeout"):
        if not getattr(config, name) > 0:
            problems.append(f"{name} must be positive")
    problems.extend(_security_problems(config))
    problems.extend(_epics_problems(config))
    try:
        if config.tango_host:
            tango_host_list(config.tango_host)
        for host in config.tango_hosts:
            normalize_tango_host(host)
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def _security_problems(config: Config) -> list[str]:
    problems = []
    for name, choices in (("auth", ("none", "basic")), ("writes", ("off", "on")),
                          ("read_access", ("anonymous", "authenticated"))):
        if getattr(config, name) not in choices:
            problems.append(f"{name} must be one of {', '.join(choices)}")
    if config.auth == "basic":
        if not config.users_file:
            problems.append("auth: basic needs users_file (MTANGO_USERS_FILE)")
        else:
            from mtango.security.users import UsersFileError, load_users

            try:
                load_users(config.users_file)
            except UsersFileError as exc:
                problems.append(str(exc))
    if config.read_access == "authenticated" and config.auth == "none":
        problems.append("read_access: authenticated needs auth: basic")
    if '"' in config.auth_realm or not config.auth_realm.isprintable():
        problems.append("auth_realm must be printable text without quotes")
    return problems


def _epics_problems(config: Config) -> list[str]:
    problems = []
    for name in (
        "epics_connect_timeout_ms",
        "epics_read_timeout_ms",
        "epics_search_retry_ms",
        "epics_batch_max",
        "epics_max_searching",
    ):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    if config.epics_ca_max_array_bytes < 40:
        problems.append("epics_ca_max_array_bytes must be at least 40")
    if config.epics_max_age_ms < 0:
        problems.append("epics_max_age_ms must not be negative")
    for name in ("epics_idle_timeout", "epics_dead_timeout", "epics_metadata_ttl"):
        if not getattr(config, name) > 0:
            problems.append(f"{name} must be positive")
    if not 0 < config.epics_ca_server_port < 65536:
        problems.append(f"epics_ca_server_port {config.epics_ca_server_port} is out of range")
    for address in config.epics_ca_addr_list:
        try:
            parse_ca_address(address, config.epics_ca_server_port)
        except ConfigError as exc:
            problems.append(str(exc))
    for name in ("epics_allow", "epics_deny"):
        for pattern in getattr(config, name):
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(f"{name}: {pattern!r} is not a regular expression ({exc})")
    return problems
