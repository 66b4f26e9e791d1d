"""rc3 device and device state."""

from __future__ import annotations

from sanic import Request
from sanic.response import HTTPResponse

from mtango.api.common import Route, device_url, host_url, respond
from mtango.api.rc3 import target
from mtango.api.rc3.target import DEVICE


async def device(
    request: Request, host: str, port: str, domain: str, family: str, member: str
) -> HTTPResponse:
    """Database facts about the device; answers even when the device server is down."""
    tango, key, name = target.device(request, host, port, domain, family, member)
    info = await tango.device_info(key, name)
    url = device_url(request, host, port, name)
    body = {
        "name": info["name"],
        "info": info,
        "state": f"{url}/state",
        "attributes": f"{url}/attributes",
        "commands": f"{url}/commands",
        "pipes": f"{url}/pipes",
        "properties": f"{url}/properties",
        "_links": {"_parent": host_url(request, host, port, "devices"), "_self": url},
    }
    return respond(request, body)


async def state(
    request: Request, host: str, port: str, domain: str, family: str, member: str
) -> HTTPResponse:
    tango, key, name = target.device(request, host, port, domain, family, member)
    value, status = await tango.device_state(key, name)
    url = device_url(request, host, port, name)
    body = {
        "state": value,
        "status": status,
        "_links": {
            "_state": f"{url}/attributes/State",
            "_status": f"{url}/attributes/Status",
            "_parent": url,
            "_self": f"{url}/state",
        },
    }
    return respond(request, body)


ROUTES = [
    Route(DEVICE, device, "device"),
    Route(f"{DEVICE}/state", state, "device_state"),
]
