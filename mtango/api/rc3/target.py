"""Resolve the Tango database and device a URL names, refusing what is not allowed."""

from __future__ import annotations

from typing import Any

from sanic import Request

from mtango.api.common import check_name, device_name, query_args, query_value
from mtango.errors import bad_request
from mtango.security.guard import TargetsOf, WriteTarget
from mtango.tango.backend import TangoBackend

DEVICE = "/hosts/<host>/<port>/devices/<domain>/<family>/<member>"


def backend(request: Request) -> TangoBackend:
    return request.app.ctx.tango


def device(
    request: Request, host: str, port: str, domain: str, family: str, member: str
) -> tuple[TangoBackend, str, str]:
    """(backend, normalized tango host, device name) for a device URL; 403/400 when refused."""
    tango = backend(request)
    return tango, tango.host_key(host, port), device_name(domain, family, member)


# -- what a write touches (mtango.security.guard) --------------------------------------------------

# Query parameters of write requests that are not attribute or property names.
CONTROL_PARAMETERS = frozenset({"async", "filter", "v", "value"})


def is_async(request: Request) -> bool:
    """``?async=true``: answer 204 at once after the write, without reading back."""
    return (query_value(request, "async") or "").lower() in ("true", "1", "yes")


def _write_target(key: str, device: str, kind: str, name: str | None) -> WriteTarget:
    fields = {"host": key, "device": device}
    if name is not None:
        fields[kind] = name
    return WriteTarget("tango", f"{device}/{name or ''}".lower(), fields)


def writes(kind: str, param: str | None = None, names_from_query: bool = False) -> TargetsOf:
    """The targets of a Tango write route: the device and the ``kind`` (attribute, command,
    property) named by the URL parameter ``param``, or by every query parameter name."""

    def targets(request: Request, params: dict[str, Any]) -> list[WriteTarget]:
        _, key, name = device(request, params["host"], params["port"], params["domain"],
                              params["family"], params["member"])
        if param is not None:
            return [_write_target(key, name, kind, check_name(params[param], kind))]
        if names_from_query:
            names = [n for n in query_args(request) if n not in CONTROL_PARAMETERS]
            if not names:
                raise bad_request(f"name the {kind}s to write as ?name=value&...",
                                  "MissingParameter")
            return [_write_target(key, name, kind, check_name(n, kind)) for n in names]
        return [_write_target(key, name, kind, None)]

    return targets
