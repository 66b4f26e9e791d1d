"""rc3 pipes. PyTango 10 removed pipes: devices list none, and reading one is a clear failure."""

from __future__ import annotations

from sanic import Request
from sanic.response import HTTPResponse

from mtango.api.common import Route, check_name, device_url, respond, respond_list, segment
from mtango.api.rc3 import target
from mtango.api.rc3.target import DEVICE

PIPES = f"{DEVICE}/pipes"


async def pipes(request: Request, host: str, port: str, domain: str, family: str,
                member: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    dev = device_url(request, host, port, device)
    names = await tango.pipes(key, device)
    return respond_list(request, [{"name": n, "href": f"{dev}/pipes/{segment(n)}"} for n in names])


async def pipe(request: Request, host: str, port: str, domain: str, family: str,
               member: str, pipe: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    return respond(request, await tango.read_pipe(key, device, check_name(pipe, "pipe")))


ROUTES = [
    Route(PIPES, pipes, "pipes"),
    Route(f"{PIPES}/<pipe>", pipe, "pipe"),
]
