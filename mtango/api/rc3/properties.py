"""rc3 device properties (from the Tango database); their changes, guarded and audited."""

from __future__ import annotations

from typing import Any

from sanic import Request
from sanic.response import HTTPResponse

from mtango.api.common import Route, check_name, query_args, query_list, respond, respond_list
from mtango.api.rc3 import target
from mtango.api.rc3.target import CONTROL_PARAMETERS, DEVICE
from mtango.errors import bad_request
from mtango.security.access import WRITE
from mtango.security.guard import note

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


async def put_properties(request: Request, host: str, port: str, domain: str, family: str,
                         member: str) -> HTTPResponse:
    """``PUT``/``POST .../properties?name=value&name=value2...``: each named property gets the
    values given for it (repeated names: several values); the others are left as they are."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    props = {name: values for name, values in query_args(request).items()
             if name not in CONTROL_PARAMETERS}
    outcome = await tango.put_device_properties(key, device, props)
    for index, name in enumerate(props):
        note(request, index=index, before=_part(outcome.before, name),
             sent=_part(outcome.sent, name), after=_part(outcome.after, name))
    if target.is_async(request):
        return HTTPResponse(status=204)
    return respond_list(request, outcome.body)


async def put_property(request: Request, host: str, port: str, domain: str, family: str,
                       member: str, prop: str) -> HTTPResponse:
    """``PUT``/``POST .../properties/{prop}?value=a&value=b``; ``DELETE`` removes it."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    name = check_name(prop, "property")
    if request.method == "DELETE":
        outcome = await tango.delete_device_property(key, device, name)
        note(request, before=_part(outcome.before, name))
        return HTTPResponse(status=204)
    values = query_list(request, "value")
    if not values:
        raise bad_request("give the property's values as ?value=a&value=b", "MissingParameter")
    outcome = await tango.put_device_properties(key, device, {name: values})
    note(request, before=_part(outcome.before, name), sent=_part(outcome.sent, name),
         after=_part(outcome.after, name))
    if target.is_async(request):
        return HTTPResponse(status=204)
    return respond(request, outcome.body[0] if isinstance(outcome.body, list) else outcome.body)


def _part(values: Any, name: str) -> Any:
    return values.get(name) if isinstance(values, dict) else None


ROUTES = [
    Route(PROPS, properties, "device_properties"),
    Route(f"{PROPS}/<prop>", property_, "device_property"),
    Route(PROPS, put_properties, "device_properties_put", ("PUT", "POST"), action=WRITE,
          targets=target.writes("property", names_from_query=True), audit_action="property"),
    Route(f"{PROPS}/<prop>", put_property, "device_property_put", ("PUT", "POST", "DELETE"),
          action=WRITE, targets=target.writes("property", "prop"), audit_action="property"),
]
