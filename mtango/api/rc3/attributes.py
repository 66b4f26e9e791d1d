"""rc3 attributes: list, links, values (one, several, plain), info, history, properties."""

from __future__ import annotations

from email.utils import formatdate

from sanic import Request
from sanic.response import HTTPResponse

from mtango import imaging
from mtango.api.common import (
    Route,
    check_name,
    device_url,
    query_int,
    query_list,
    query_value,
    respond,
    respond_list,
    segment,
)
from mtango.api.rc3 import target
from mtango.api.rc3.target import DEVICE
from mtango.errors import bad_request
from mtango.live.hub import Hub
from mtango.tango.events import tango_key

# Header naming the attributes of an answer that came from their live subscription's latest
# event (?max_age=, tango_max_age_ms) instead of a device call.
FROM_EVENTS = "x-mtango-from-events"

ATTRS = f"{DEVICE}/attributes"
ATTR = f"{ATTRS}/<attr>"


def _links(request: Request, host: str, port: str, device: str, name: str) -> dict:
    dev = device_url(request, host, port, device)
    url = f"{dev}/attributes/{segment(name)}"
    return {
        "name": name,
        "value": f"{url}/value",
        "info": f"{url}/info",
        "history": f"{url}/history",
        "properties": f"{url}/properties",
        "_links": {"_device": dev, "_parent": f"{dev}/attributes", "_self": url},
    }


def _requested(request: Request) -> list[str]:
    names = query_list(request, "attr")
    if not names:
        raise bad_request("give the attributes to read as ?attr=name&attr=...", "MissingParameter")
    return [check_name(n, "attribute") for n in names]


def _last_modified(timestamp_ms: int) -> dict[str, str]:
    return {"Last-Modified": formatdate(timestamp_ms / 1000, usegmt=True)}


async def attributes(request: Request, host: str, port: str, domain: str, family: str,
                     member: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    infos = await tango.attribute_infos(key, device)
    return respond_list(request, [_links(request, host, port, device, i["name"]) for i in infos])


def _max_age_s(request: Request) -> float:
    """How old a live event may be to answer a read: ``?fresh=1`` none, else ``?max_age=ms``,
    else ``tango_max_age_ms``."""
    if query_value(request, "fresh") in ("1", "true", "yes"):
        return 0.0
    default = request.app.ctx.config.tango_max_age_ms
    return query_int(request, "max_age", default, 0, 10**9) / 1000


def _from_events(request: Request, key: str, device: str, names: list[str]) -> dict[str, dict]:
    """The value objects of ``names`` that live subscriptions can answer, by name."""
    max_age = _max_age_s(request)
    if max_age <= 0:
        return {}
    hub: Hub = request.app.ctx.hub
    found = {}
    for name in names:
        event = hub.current(tango_key(key, device, name, "change"), max_age)
        if event is not None:
            found[name] = event.body
    return found


async def values(request: Request, host: str, port: str, domain: str, family: str,
                 member: str) -> HTTPResponse:
    """``?attr=a&attr=b``: one device call; failed attributes are FAILURE items in the array.

    Attributes whose live subscription is current (``?max_age=``) are answered from it; the
    device is asked only for the others."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    names = _requested(request)
    known = _from_events(request, key, device, names)
    if not known:
        return respond(request, await tango.read_attributes(key, device, names))
    rest = [n for n in names if n not in known]
    read = iter(await tango.read_attributes(key, device, rest) if rest else [])
    body = [known[n] if n in known else next(read) for n in names]
    return respond(request, body, headers={FROM_EVENTS: ",".join(known)})


async def infos(request: Request, host: str, port: str, domain: str, family: str,
                member: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    return respond(
        request, [await tango.attribute_info(key, device, a) for a in _requested(request)]
    )


async def attribute(request: Request, host: str, port: str, domain: str, family: str,
                    member: str, attr: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    info = await tango.attribute_info(key, device, check_name(attr, "attribute"))
    return respond(request, _links(request, host, port, device, info["name"]))


async def value(request: Request, host: str, port: str, domain: str, family: str,
                member: str, attr: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    name = check_name(attr, "attribute")
    known = _from_events(request, key, device, [name])
    if known:
        body = known[name]
        return respond(request, body, headers={**_last_modified(body["timestamp"]),
                                               FROM_EVENTS: name})
    body = await tango.read_attribute(key, device, name)
    headers = _last_modified(body["timestamp"]) if "value" in body else None
    return respond(request, body, headers=headers)


async def plain_value(request: Request, host: str, port: str, domain: str, family: str,
                      member: str, attr: str) -> HTTPResponse:
    """The bare JSON value; images as a ``data:image/jpeg;base64,...`` URL (rc3, Dec 2016)."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    body = await tango.read_attribute(key, device, check_name(attr, "attribute"))
    if "errors" in body:  # a read that failed inside the value object: answer the failure
        return respond(request, body)
    plain = body["value"]
    if isinstance(plain, dict) and "width" in plain and "height" in plain:
        plain = imaging.jpeg_data_url(plain["data"], plain["width"], plain["height"])
    return respond(request, plain, headers=_last_modified(body["timestamp"]))


async def info(request: Request, host: str, port: str, domain: str, family: str,
               member: str, attr: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    return respond(request, await tango.attribute_info(key, device, check_name(attr, "attribute")))


async def history(request: Request, host: str, port: str, domain: str, family: str,
                  member: str, attr: str) -> HTTPResponse:
    """Polling buffer of the attribute (``?depth=N``, default from the configuration)."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    depth = query_int(request, "depth", request.app.ctx.config.history_depth, 1, 10000)
    items = await tango.attribute_history(key, device, check_name(attr, "attribute"), depth)
    return respond_list(request, items)


async def properties(request: Request, host: str, port: str, domain: str, family: str,
                     member: str, attr: str) -> HTTPResponse:
    """Database properties of the attribute, in the rc3 spec's shape ``[{"prop": [values]}]``."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    props = await tango.attribute_properties(key, device, check_name(attr, "attribute"))
    return respond_list(request, [{name: values} for name, values in props.items()])


async def property_(request: Request, host: str, port: str, domain: str, family: str,
                    member: str, attr: str, prop: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    props = await tango.attribute_properties(key, device, check_name(attr, "attribute"))
    name = check_name(prop, "property")
    found = next((n for n in props if n.lower() == name.lower()), name)
    return respond(request, {found: props.get(found, [])})


ROUTES = [
    Route(ATTRS, attributes, "attributes"),
    Route(f"{ATTRS}/value", values, "attributes_value"),
    Route(f"{ATTRS}/info", infos, "attributes_info"),
    Route(ATTR, attribute, "attribute"),
    Route(f"{ATTR}/value", value, "attribute_value"),
    Route(f"{ATTR}/value/plain", plain_value, "attribute_value_plain"),
    Route(f"{ATTR}/info", info, "attribute_info"),
    Route(f"{ATTR}/history", history, "attribute_history"),
    Route(f"{ATTR}/properties", properties, "attribute_properties"),
    Route(f"{ATTR}/properties/<prop>", property_, "attribute_property"),
]
