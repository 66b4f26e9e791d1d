"""rc3 attributes: list, links, values (one, several, plain, image, plot), info, history,
properties; and their writes (values, info, properties), guarded and audited by
``mtango.security.guard``."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse

from mtango import imaging
from mtango.api.common import (
    NO_STORE,
    Route,
    check_name,
    device_url,
    draw_plot,
    json_body,
    last_modified,
    picture_format,
    picture_response,
    plot_options,
    query_args,
    query_float,
    query_int,
    query_list,
    query_value,
    respond,
    respond_list,
    segment,
)
from mtango.api.rc3 import target
from mtango.api.rc3.target import DEVICE
from mtango.errors import ApiError, bad_request
from mtango.live.hub import Hub
from mtango.security.access import WRITE
from mtango.security.guard import failure_of, note
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
        return respond(request, body, headers={**last_modified(body["timestamp"]),
                                               FROM_EVENTS: name})
    body = await tango.read_attribute(key, device, name)
    headers = last_modified(body["timestamp"]) if "value" in body else None
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
    return respond(request, plain, headers=last_modified(body["timestamp"]))


# -- pictures (value/image, value/plot) ------------------------------------------------------------

def _image_png(value: Any, name: str, low: float | None, high: float | None,
               cmap: str) -> bytes:
    if isinstance(value, dict) and "width" in value and "height" in value:
        return imaging.image_png(value["data"], value["width"], value["height"],
                                 low=low, high=high, cmap=cmap)
    if isinstance(value, dict) and "format" in value:  # DevEncoded
        return imaging.encoded_png(value["format"], base64.b64decode(value["data"]),
                                   low=low, high=high, cmap=cmap)
    raise imaging.NotAnImage(f"{name} is not an image attribute")


async def image_value(request: Request, host: str, port: str, domain: str, family: str,
                      member: str, attr: str) -> HTTPResponse:
    """``GET .../value/image``: an image attribute as a PNG, scaled as ``mtango.imaging`` says.

    ``?format=png``: the PNG itself (for ``<img src>``); otherwise the read shape with ``value``
    a ``data:image/png;base64,...`` URL. ``?min=&max=`` set the scale, ``?cmap=gray|viridis``
    the colours."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    name = check_name(attr, "attribute")
    fmt = picture_format(request, ("json", "png"))
    low, high = query_float(request, "min"), query_float(request, "max")
    if low is not None and high is not None and low > high:
        raise bad_request(f"min={low:g} is above max={high:g}", "BadParameter")
    cmap = query_value(request, "cmap", "gray") or "gray"
    if cmap not in imaging.CMAPS:
        raise bad_request(f"cmap={cmap!r} must be one of {', '.join(imaging.CMAPS)}",
                          "BadParameter")
    body = await tango.read_attribute(key, device, name)
    if "errors" in body:  # the read failed: answer the failure, as value reads do
        return respond(request, body)
    try:
        png = await asyncio.to_thread(_image_png, body["value"], body["name"], low, high, cmap)
    except imaging.NotAnImage as exc:
        raise bad_request(str(exc), "NotAnImage") from None
    if fmt == "png":
        return picture_response(png, "image/png", body["timestamp"])
    shaped = {**body, "value": imaging.png_data_url(png)}
    return respond(request, shaped, headers={**NO_STORE, **last_modified(body["timestamp"])})


async def plot_value(request: Request, host: str, port: str, domain: str, family: str,
                     member: str, attr: str) -> HTTPResponse:
    """``GET .../value/plot``: a spectrum as an SVG line plot (``?format=png``: a PNG), its
    unit from the attribute's info, its title the attribute's name (``mtango.plot``)."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    name = check_name(attr, "attribute")
    fmt, width, height = plot_options(request)
    body = await tango.read_attribute(key, device, name)
    if "errors" in body:
        return respond(request, body)
    unit = str((await tango.attribute_info(key, device, name)).get("unit") or "")
    if unit in ("No unit", "None"):
        unit = ""
    content = await draw_plot(body["value"], body["name"], unit, fmt, width, height)
    return picture_response(content, "image/svg+xml" if fmt == "svg" else "image/png",
                            body["timestamp"])


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


# -- writes --------------------------------------------------------------------------------------


def _written(request: Request, body: Any, timestamp: int | None = None) -> HTTPResponse:
    if target.is_async(request):
        return HTTPResponse(status=204)
    headers = last_modified(timestamp) if timestamp else None
    return respond(request, body, headers=headers)


def _written_to(request: Request, key: str, device: str, names: list[str]) -> None:
    """Reads from events (``?max_age=``) must not answer a value from before this write."""
    hub: Hub = request.app.ctx.hub
    for name in names:
        hub.written(tango_key(key, device, name, "change"))


def _value_sent(request: Request) -> tuple[Any, bool]:
    """The value of a one-attribute write: ``?v=`` (repeatable: a spectrum), else the body as
    JSON, else the body as text. (raw, from_json)."""
    values = query_list(request, "v")
    if values:
        return values, False
    if not request.body.strip():
        raise bad_request("give the value as ?v=... or as the request body", "MissingParameter")
    try:
        return json_body(request), True
    except ApiError:
        return [request.body.decode("utf-8", "replace")], False


async def write_value(request: Request, host: str, port: str, domain: str, family: str,
                      member: str, attr: str) -> HTTPResponse:
    """``PUT .../attributes/{attr}/value``: one device write; the answer is the value read
    back (``?async=true``: 204, nothing read back)."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    raw, from_json = _value_sent(request)
    name = check_name(attr, "attribute")
    _written_to(request, key, device, [name])
    outcome = await tango.write_attribute(key, device, name, raw, from_json=from_json,
                                          wait=not target.is_async(request))
    _written_to(request, key, device, [name])  # an event that came during the write is old
    note(request, before=outcome.before, sent=outcome.sent, after=outcome.after)
    body = outcome.body
    stamp = body.get("timestamp") if isinstance(body, dict) and "value" in body else None
    return _written(request, body, stamp)


async def write_values(request: Request, host: str, port: str, domain: str, family: str,
                       member: str) -> HTTPResponse:
    """``PUT .../attributes/value?a=1&b=2`` (and rc3's first ``PUT .../attributes?a=1``): every
    attribute converted, one device write, one read back; one item per attribute."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    values = {name: vals for name, vals in query_args(request).items()
              if name not in target.CONTROL_PARAMETERS}
    _written_to(request, key, device, list(values))
    outcome = await tango.write_attributes(key, device, values,
                                           wait=not target.is_async(request))
    _written_to(request, key, device, list(values))
    items = outcome.body if isinstance(outcome.body, list) else [None] * len(values)
    for index, (name, item) in enumerate(zip(values, items, strict=True)):
        note(request, index=index, before=_part(outcome.before, name),
             sent=_part(outcome.sent, name), after=_part(outcome.after, name),
             error=failure_of(item))
    return _written(request, outcome.body)


def _part(values: Any, name: str) -> Any:
    return values.get(name) if isinstance(values, dict) else None


async def write_info(request: Request, host: str, port: str, domain: str, family: str,
                     member: str, attr: str) -> HTTPResponse:
    """``PUT .../attributes/{attr}/info``: the AttributeInfoEx fields a user may set."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    changes = json_body(request)
    if not isinstance(changes, dict):
        raise bad_request("the body must be a JSON object of attribute info fields", "BadBody")
    outcome = await tango.set_attribute_info(key, device, check_name(attr, "attribute"), changes)
    note(request, before=outcome.before, sent=outcome.sent, after=outcome.after)
    return _written(request, outcome.body)


async def write_property(request: Request, host: str, port: str, domain: str, family: str,
                         member: str, attr: str, prop: str) -> HTTPResponse:
    """``PUT .../attributes/{attr}/properties/{prop}?value=a&value=b``; ``DELETE`` removes it."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    name, prop_name = check_name(attr, "attribute"), check_name(prop, "property")
    if request.method == "DELETE":
        outcome = await tango.delete_attribute_property(key, device, name, prop_name)
        note(request, before=outcome.before)
        return HTTPResponse(status=204)
    values = query_list(request, "value")
    if not values:
        raise bad_request("give the property's values as ?value=a&value=b", "MissingParameter")
    outcome = await tango.put_attribute_property(key, device, name, prop_name, values)
    note(request, before=outcome.before, sent=outcome.sent, after=outcome.after)
    return _written(request, outcome.body)


def _writes(kind: str, param: str | None = None, names_from_query: bool = False,
            audit: str = "") -> dict[str, Any]:
    return {"action": WRITE, "targets": target.writes(kind, param, names_from_query),
            "audit_action": audit or kind}


ROUTES = [
    Route(ATTRS, attributes, "attributes"),
    Route(f"{ATTRS}/value", values, "attributes_value"),
    Route(f"{ATTRS}/info", infos, "attributes_info"),
    Route(ATTR, attribute, "attribute"),
    Route(f"{ATTR}/value", value, "attribute_value"),
    Route(f"{ATTR}/value/plain", plain_value, "attribute_value_plain"),
    Route(f"{ATTR}/value/image", image_value, "attribute_value_image"),
    Route(f"{ATTR}/value/plot", plot_value, "attribute_value_plot"),
    Route(f"{ATTR}/info", info, "attribute_info"),
    Route(f"{ATTR}/history", history, "attribute_history"),
    Route(f"{ATTR}/properties", properties, "attribute_properties"),
    Route(f"{ATTR}/properties/<prop>", property_, "attribute_property"),
    Route(ATTRS, write_values, "attributes_put", ("PUT",),
          **_writes("attribute", names_from_query=True)),
    Route(f"{ATTRS}/value", write_values, "attributes_value_put", ("PUT",),
          **_writes("attribute", names_from_query=True)),
    Route(f"{ATTR}/value", write_value, "attribute_value_put", ("PUT",),
          **_writes("attribute", "attr")),
    Route(f"{ATTR}/info", write_info, "attribute_info_put", ("PUT",),
          **_writes("attribute", "attr", audit="attribute_info")),
    Route(f"{ATTR}/properties/<prop>", write_property, "attribute_property_put",
          ("PUT", "DELETE"), **_writes("attribute", "attr", audit="attribute_property")),
]
