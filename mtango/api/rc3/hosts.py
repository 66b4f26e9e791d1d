"""rc3 entry point, Tango hosts, database info and the device list."""

from __future__ import annotations

from sanic import Request
from sanic.response import HTTPResponse

from mtango.api.common import (
    Route,
    check_glob,
    host_url,
    query_value,
    rc3_url,
    respond,
    respond_list,
)
from mtango.api.rc3.target import backend


async def rc3_root(request: Request) -> HTTPResponse:
    auth = request.app.ctx.config.auth
    return respond(request, {"hosts": rc3_url(request, "hosts"), "x-auth-method": auth})


async def hosts(request: Request) -> HTTPResponse:
    """An object ``{"host:port": url}`` (the Java server's and the JS client's shape)."""
    body = {}
    for key in backend(request).hosts():
        name, port = key.rsplit(":", 1)
        body[key] = host_url(request, name, port)
    return respond(request, body)


async def database(request: Request, host: str, port: str) -> HTTPResponse:
    tango = backend(request)
    info = await tango.database_info(tango.host_key(host, port))
    body = {
        "host": host,
        "port": int(port),
        "name": info["name"],
        "info": info["info"],
        "devices": host_url(request, host, port, "devices"),
    }
    return respond(request, body)


async def devices(request: Request, host: str, port: str) -> HTTPResponse:
    """Device names matching the Tango glob ``wildcard`` (``*`` by default), as links."""
    tango = backend(request)
    key = tango.host_key(host, port)
    wildcard = check_glob(query_value(request, "wildcard") or "*", "wildcard")
    names = await tango.device_names(key, wildcard)
    items = [{"name": n, "href": host_url(request, host, port, "devices", n)} for n in names]
    return respond_list(request, items)


ROUTES = [
    Route("", rc3_root, "rc3_root"),
    Route("/hosts", hosts, "hosts"),
    Route("/hosts/<host>/<port>", database, "database"),
    Route("/hosts/<host>/<port>/devices", devices, "devices"),
]
