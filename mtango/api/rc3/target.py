"""Resolve the Tango database and device a URL names, refusing what is not allowed."""

from __future__ import annotations

from sanic import Request

from mtango.api.common import device_name
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
