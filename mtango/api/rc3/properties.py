"""rc3 device properties (from the Tango database)."""

from __future__ import annotations

from sanic import Request
from sanic.response import HTTPResponse

from mtango.api.common import Route, check_name, respond, respond_list
from mtango.api.rc3 import target
from mtango.api.rc3.target import DEVICE

PROPS = f"{DEVICE}/properties"


async def properties(request: Request, host: str, port: str, domain: str, family: str,
                     member: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    props = await tango.device_properties(key, device)
    return respond_list(request, [{"name": n, "values": v} for n, v in props.items()])


async def property_(request: Request, host: str, port: str, domain: str, family: str,
                    member: str, prop: str) -> HTTPResponse:
    """A property without a value in the database answers with an empty ``values`` list."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    name = check_name(prop, "property")
    values = await tango.device_property(key, device, name)
    return respond(request, {"name": name, "values": values})


ROUTES = [
    Route(PROPS, properties, "device_properties"),
    Route(f"{PROPS}/<prop>", property_, "device_property"),
]
