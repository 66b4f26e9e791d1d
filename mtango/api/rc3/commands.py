"""rc3 commands: list, one command, command history; running one (guarded and audited)."""

from __future__ import annotations

from sanic import Request
from sanic.response import HTTPResponse

from mtango.api.common import (
    Route,
    check_name,
    device_url,
    query_int,
    respond,
    respond_list,
    segment,
)
from mtango.api.rc3 import target
from mtango.api.rc3.target import DEVICE
from mtango.security.access import WRITE
from mtango.security.guard import note

CMDS = f"{DEVICE}/commands"


def _command(request: Request, host: str, port: str, device: str, info: dict) -> dict:
    dev = device_url(request, host, port, device)
    url = f"{dev}/commands/{segment(info['cmd_name'])}"
    return {
        "name": info["cmd_name"],
        "info": info,
        "history": f"{url}/history",
        "_links": {"_parent": dev, "_self": url},
    }


async def commands(request: Request, host: str, port: str, domain: str, family: str,
                   member: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    infos = await tango.commands(key, device)
    return respond_list(request, [_command(request, host, port, device, i) for i in infos])


async def command(request: Request, host: str, port: str, domain: str, family: str,
                  member: str, cmd: str) -> HTTPResponse:
    tango, key, device = target.device(request, host, port, domain, family, member)
    info = await tango.command_info(key, device, check_name(cmd, "command"))
    return respond(request, _command(request, host, port, device, info))


async def history(request: Request, host: str, port: str, domain: str, family: str,
                  member: str, cmd: str) -> HTTPResponse:
    """Polling buffer of the command (``?depth=N``); only polled commands have one."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    depth = query_int(request, "depth", request.app.ctx.config.history_depth, 1, 10000)
    items = await tango.command_history(key, device, check_name(cmd, "command"), depth)
    return respond_list(request, items)


async def run(request: Request, host: str, port: str, domain: str, family: str, member: str,
              cmd: str) -> HTTPResponse:
    """``PUT .../commands/{cmd}``: the argin is the body (JSON, the tangojs connector's bare
    text, or the v1 ``{host, device, name, input}``); the answer is ``{name, output}``
    (``?async=true``: 204)."""
    tango, key, device = target.device(request, host, port, domain, family, member)
    wait = not target.is_async(request)
    outcome = await tango.run_command(key, device, check_name(cmd, "command"), request.body,
                                      request.headers.get("content-type"), wait=wait)
    note(request, before=outcome.before, sent=outcome.sent, after=outcome.after)
    if not wait:
        return HTTPResponse(status=204)
    return respond(request, outcome.body)


ROUTES = [
    Route(CMDS, commands, "commands"),
    Route(f"{CMDS}/<cmd>", command, "command"),
    Route(f"{CMDS}/<cmd>/history", history, "command_history"),
    Route(f"{CMDS}/<cmd>", run, "command_put", ("PUT",), action=WRITE,
          targets=target.writes("command", "cmd"), audit_action="command"),
]
