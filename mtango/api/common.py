"""What every API route needs: absolute links, parameter parsing, filter, range, JSON responses,
pictures (SVG and PNG answers).

Routes stay short: they parse and validate their inputs with these helpers, call a backend, and
hand the resulting plain data to ``respond``. Validation failures raise ``ApiError`` (400), which
the app's error handler turns into the FAILURE body like any other failure.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlencode

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from mtango import jsonenc, plot
from mtango.errors import ApiError, ErrorEntry, bad_request
from mtango.security.access import READ, WRITE
from mtango.security.guard import TargetsOf, guarded

# Tango names (device members, attributes, commands, properties): printable ASCII except
# separators, wildcards and quotes. Tango itself is more lenient; these would only ever reach it
# as mistakes or probes. Tango carries names as Latin-1 and PyTango decodes some back as UTF-8, so
# anything beyond ASCII fails inside PyTango (UnicodeError) instead of as a Tango "not found".
_NAME = re.compile(r"^[\x21\x23-\x26\x28\x29\x2b-\x2e\x30-\x3b\x3d\x40-\x5b\x5d-\x7e]{1,255}$")
# A Tango glob of device names (``sys/*/1``): printable ASCII, no spaces.
_GLOB = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class Route:
    """One endpoint: its URL template (relative to the blueprint), its handler, its methods, and
    its action: ``read``, or ``write`` with ``targets`` naming what a request writes (for the
    permission check and the audit, ``mtango.security.guard``)."""

    uri: str
    handler: Callable[..., Any]
    name: str
    methods: tuple[str, ...] = ("GET",)
    action: str = READ
    targets: TargetsOf | None = None
    audit_action: str = ""  # what the audit line calls it: "attribute", "command", ...
    protocol: str = "rc3"


def make_blueprint(name: str, url_prefix: str, routes: Iterable[Route]) -> Blueprint:
    """A blueprint of ``routes``. Routes of one URL (GET and PUT of a value) become one Sanic
    route that dispatches on the method, so that another method's 405 lists them all in its
    ``Allow`` header (RFC 9110). Write routes are wrapped by ``guarded``; the methods that write
    are ``route.ctx.writes``, which the read check leaves to them."""
    bp = Blueprint(name, url_prefix=url_prefix, strict_slashes=False)
    by_uri: dict[str, list[Route]] = {}
    for route in routes:
        by_uri.setdefault(route.uri, []).append(route)
    for uri, group in by_uri.items():
        handlers: dict[str, Callable[..., Any]] = {}
        actions: dict[str, str] = {}
        for route in group:
            handler = route.handler
            if route.action == WRITE:
                assert route.targets is not None, f"write route {route.name} names no targets"
                handler = guarded(handler, route.protocol, route.audit_action or route.name,
                                  route.targets)
            for method in route.methods:
                handlers[method], actions[method] = handler, route.action
        if len(group) == 1:
            handler = handlers[group[0].methods[0]]
        else:
            handler = _dispatcher(handlers)
        writes = frozenset(m for m, action in actions.items() if action == WRITE)
        bp.add_route(handler, uri, methods=list(handlers), name=group[0].name, unquote=True,
                     ctx_writes=writes)
    return bp


def _dispatcher(handlers: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    async def dispatch(request: Request, **params: Any) -> Any:
        return await handlers[request.method](request, **params)

    return dispatch


def absolute(request: Request, path: str) -> str:
    """Absolute URL of ``path`` on this server, as the Java server and mtango-py emit hrefs."""
    return f"{request.scheme}://{request.host}{path}"


def api_base(request: Request) -> str:
    return request.app.ctx.config.app_base


# What may stay unescaped in a path segment of a link: RFC 3986 ``pchar`` except "%" (a name with
# a literal "%" must not turn into an escape). Names in links are escaped with it, so every href is
# a valid URL that leads back to the same name.
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"


def segment(name: str) -> str:
    """A name as one path segment of a link (``a b`` -> ``a%20b``)."""
    return quote(name, safe=_SEGMENT_SAFE)


def rc3_url(request: Request, *parts: str) -> str:
    """Absolute URL under ``{app_base}/rc3``; ``/`` inside a part (a device name) separates."""
    escaped = [quote(part, safe=_SEGMENT_SAFE + "/") for part in parts]
    return absolute(request, "/".join([api_base(request) + "/rc3", *escaped]))


def host_url(request: Request, host: str, port: str, *parts: str) -> str:
    return rc3_url(request, "hosts", host, port, *parts)


def device_url(request: Request, host: str, port: str, device: str, *parts: str) -> str:
    return host_url(request, host, port, "devices", device, *parts)


def check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise bad_request(f"{what} {value!r} is not a valid Tango name", "BadName")
    return value


def check_glob(value: str, what: str) -> str:
    if not _GLOB.fullmatch(value):
        raise bad_request(f"{what} {value!r} must be printable ASCII (a Tango glob)",
                          "BadParameter")
    return value


def device_name(domain: str, family: str, member: str) -> str:
    for part, what in ((domain, "domain"), (family, "family"), (member, "member")):
        check_name(part, f"device {what}")
    return f"{domain}/{family}/{member}"


# -- what the client sent: URL and body, parsed strictly ------------------------------------------
#
# Sanic decodes escapes leniently: "%ff" and "%ED%A0%80" (a UTF-16 surrogate, which UTF-8 forbids)
# become U+FFFD, and "%zz" or a lone "%" stays as it is, so a PV named "%zz" was searched for on
# the network until the 2 s connect timeout. A JSON body may carry a lone surrogate ("\ud800"),
# which no UTF-8 answer can hold (it was a 500 UnicodeEncodeError). Every route reads its input
# through these functions instead, and the app checks every URL before any route runs.

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def decode_component(raw: str, what: str) -> str:
    """One percent-encoded URL component as text; 400 unless it encodes UTF-8 with valid escapes."""
    if _BAD_ESCAPE.search(raw):
        raise bad_request(
            f"{what} {raw!r} is not valid percent-encoding ('%' must start an escape %XX; "
            "write a literal '%' as %25)",
            "BadEncoding",
        )
    try:
        return unquote_to_bytes(raw).decode("utf-8")  # strict: rejects encoded surrogates too
    except UnicodeDecodeError:
        raise bad_request(f"{what} {raw!r} does not percent-encode UTF-8 text",
                          "BadEncoding") from None


def check_url(request: Request) -> None:
    """The path and the query string are valid percent-encoded UTF-8 (else 400 ``BadEncoding``).

    Sanic accepts only ASCII request targets, so ``raw`` is ASCII and safe to quote in a message.
    """
    decode_component(request.path, "the path")
    query_args(request)


def query_args(request: Request) -> dict[str, list[str]]:
    """The query string, decoded strictly once per request: name -> non-empty values.

    As Sanic's ``request.args``: ``+`` is a space and empty values are left out.
    """
    parsed: dict[str, list[str]] | None = getattr(request.ctx, "query_args", None)
    if parsed is None:
        parsed = {}
        for pair in request.query_string.split("&"):
            key, _, value = pair.replace("+", " ").partition("=")
            key = decode_component(key, "query parameter")
            value = decode_component(value, f"query parameter {key!r}")
            if key and value:
                parsed.setdefault(key, []).append(value)
        request.ctx.query_args = parsed
    return parsed


def query_value(request: Request, name: str, default: str | None = None) -> str | None:
    """The first value of query parameter ``name``."""
    values = query_args(request).get(name)
    return values[0] if values else default


def json_body(request: Request) -> Any:
    """The request body as JSON text in UTF-8 (RFC 8259); 400 ``BadBody`` when it is not.

    Strings must be text: a lone surrogate, escaped or as bytes, is refused. ``NaN`` and
    ``Infinity`` (Python's extensions) are refused, and so is nesting deeper than the parser's
    recursion.
    """
    try:
        body = json.loads(request.body.decode("utf-8"), parse_constant=_not_json)
        _check_text(body)
    except (ValueError, RecursionError) as exc:  # UnicodeError and JSONDecodeError included
        raise bad_request(f"the body is not JSON text in UTF-8: {ascii(str(exc))}",
                          "BadBody") from None
    return body


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _check_text(value: Any) -> None:
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())


def query_list(request: Request, name: str) -> list[str]:
    return list(query_args(request).get(name, []))


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = query_value(request, name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise bad_request(f"{name}={raw!r} must be an integer from {low} to {high}", "BadParameter")
    return int(raw)


# -- filter ----------------------------------------------------------------------------------------


def apply_filter(body: Any, fields: list[str]) -> Any:
    """``?filter=a&filter=b`` keeps those fields, ``?filter=!a`` keeps all others (Java's rules).

    Applied to an object or to every object of a list; a nested object is kept when any of its
    own fields is kept. FAILURE objects are never filtered: a failure stays recognisable (and
    matches the FAILURE schema) whatever fields the client asked for.
    """
    if not fields:
        return body
    invert = fields[0].startswith("!")
    names = {f.lstrip("!") for f in fields}

    def keep(obj: Any) -> Any:
        if not isinstance(obj, dict) or _is_failure(obj):
            return obj
        out = {}
        for key, value in obj.items():
            if invert:
                if key not in names:
                    out[key] = value
            elif key in names:
                out[key] = value
            elif isinstance(value, dict):
                nested = keep(value)
                if nested:
                    out[key] = nested
        return out

    if isinstance(body, list):
        return [keep(item) for item in body]
    return keep(body)


def _is_failure(obj: dict[str, Any]) -> bool:
    return obj.get("quality") == "FAILURE" and "errors" in obj


# -- range -----------------------------------------------------------------------------------------

_RANGE = re.compile(r"([0-9]{1,9})-([0-9]{1,9})")


def paginate(request: Request, items: list[Any]) -> tuple[list[Any], int, dict[str, str]]:
    """Apply ``?range=start-end``: 206 plus a ``partial_content`` element when it cuts the list.

    Returns the items to send, the HTTP status and extra headers.
    """
    raw = query_value(request, "range")
    if raw is None:
        return items, 200, {}
    match = _RANGE.fullmatch(raw)
    if not match or int(match.group(1)) >= int(match.group(2)):
        raise bad_request(f"range={raw!r} must be start-end with start < end", "BadRange")
    start, end = int(match.group(1)), int(match.group(2))
    total = len(items)
    if start == 0 and end >= total:
        return items, 200, {}
    if start >= total:
        raise ApiError(
            ErrorEntry("RangeNotSatisfiable", f"range={raw} starts past the last of {total} items"),
            status=416,
        )
    page = items[start:min(end, total)]
    limit = end - start

    def link(a: int) -> str:
        query = [(k, v) for k, vs in query_args(request).items() if k != "range" for v in vs]
        query.append(("range", f"{a}-{a + limit}"))
        return absolute(request, f"{request.path}?{urlencode(query)}")

    last_start = ((total - 1) // limit) * limit
    partial = {
        "name": "partial_content",
        "total": total,
        "offset": start,
        "limit": limit,
        "_links": {
            "_prev": link(max(0, start - limit)) if start > 0 else None,
            "_next": link(start + limit) if start + limit < total else None,
            "_first": link(0),
            "_last": link(last_start),
        },
    }
    headers = {"Content-Range": f"items {start}-{start + len(page) - 1}/{total}"}
    return [*page, partial], 206, headers


# -- pictures (value/image, value/plot, pvs/{pv}/plot) --------------------------------------------

# Pictures change with the values: never kept by browsers or proxies.
NO_STORE = {"Cache-Control": "no-store"}


def picture_format(request: Request, allowed: tuple[str, ...]) -> str:
    value = query_value(request, "format", allowed[0])
    if value not in allowed:
        raise bad_request(f"format={value!r} must be one of {', '.join(allowed)}", "BadParameter")
    return value


def query_float(request: Request, name: str) -> float | None:
    raw = query_value(request, name)
    if raw is None:
        return None
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not raw.isascii() or not math.isfinite(number):
        raise bad_request(f"{name}={raw!r} must be a finite number", "BadParameter")
    return number


def picture_response(content: bytes, content_type: str, timestamp: int | None) -> HTTPResponse:
    """A picture: not stored by caches, ``Last-Modified`` the value's timestamp."""
    headers = dict(NO_STORE)
    if timestamp is not None:
        headers.update(last_modified(timestamp))
    return HTTPResponse(content, headers=headers, content_type=content_type)


def plot_options(request: Request) -> tuple[str, int, int]:
    """``?format=svg|png``, ``?width=``, ``?height=`` of a plot."""
    return (picture_format(request, plot.FORMATS),
            query_int(request, "width", plot.DEFAULT_WIDTH, plot.MIN_WIDTH, plot.MAX_WIDTH),
            query_int(request, "height", plot.DEFAULT_HEIGHT, plot.MIN_HEIGHT, plot.MAX_HEIGHT))


async def draw_plot(values: Any, title: str, units: str, fmt: str, width: int,
                    height: int) -> bytes:
    """The plot's bytes (drawn in a thread: a large spectrum takes a while)."""
    try:
        plot.as_numbers(values)
    except plot.NotPlottable as exc:
        raise bad_request(f"{title}: {exc}", "NotPlottable") from None
    draw = plot.svg if fmt == "svg" else plot.png
    return await asyncio.to_thread(draw, values, title, units, width, height)


# -- responses -------------------------------------------------------------------------------------


def last_modified(timestamp_ms: int) -> dict[str, str]:
    return {"Last-Modified": _http_date(int(timestamp_ms // 1000))}


@functools.lru_cache(maxsize=64)
def _http_date(seconds: int) -> str:
    """HTTP dates have whole seconds: reads within one share the text (formatdate: 3 us)."""
    return formatdate(seconds, usegmt=True)


def respond(
    request: Request, body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HTTPResponse:
    """The one way routes answer: filter applied, JSON through ``mtango.jsonenc``."""
    body = apply_filter(body, query_list(request, "filter"))
    return json_response(body, status, headers)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HTTPResponse:
    return HTTPResponse(
        jsonenc.dumps_bytes(body), status=status, headers=headers, content_type="application/json"
    )


def respond_list(request: Request, items: list[Any]) -> HTTPResponse:
    """A collection: filter each item, then apply ``range``."""
    items = apply_filter(items, query_list(request, "filter"))
    page, status, headers = paginate(request, items)
    return json_response(page, status, headers)


async def event_stream_response(request: Request) -> Any:
    """Start a ``text/event-stream`` answer: no caching, and no buffering by nginx (which then
    passes each message on at once)."""
    return await request.respond(
        content_type="text/event-stream; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@contextmanager
def open_client(request: Request, client: Any) -> Iterator[None]:
    """Count ``client`` (an event stream, a pvws socket) among the worker's open clients while
    it serves (``/sys/subscriptions``, metrics, subscription changes); when it ends, close it
    (it stops listening to the hub) and let the worker collect what closed clients leave."""
    clients: set[Any] = request.app.ctx.streams
    clients.add(client)
    try:
        yield
    finally:
        clients.discard(client)
        client.close()
        request.app.ctx.worker.stream_closed()
