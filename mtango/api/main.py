"""The entry point ``{app_base}``: which API versions this server speaks."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from mtango.api.common import Route, absolute, make_blueprint, respond


async def root(request: Request) -> HTTPResponse:
    base = request.app.ctx.config.app_base
    return respond(
        request, {"rc3": absolute(request, f"{base}/rc3"), "sys": absolute(request, f"{base}/sys")}
    )


def blueprint(app_base: str) -> Blueprint:
    return make_blueprint("main", app_base, [Route("", root, "root")])
