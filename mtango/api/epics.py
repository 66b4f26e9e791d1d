"""The EPICS API, under ``/epics/rest/v1``: PV values, metadata, many PVs at once, health.

Routes only parse and validate the request, call ``request.app.ctx.epics`` (an ``EpicsBackend``)
and hand its plain data to ``respond``. PV names go raw in the path (``:``, ``.``, ``$``, ``[``,
``]`` need no escaping; ``{ } " # ? % space`` must be percent-encoded) or as ``?pv=NAME``.

| URL | answer |
|---|---|
| ``GET /epics/rest/v1`` | links |
| ``GET pvs/{pv}``, ``GET pvs?pv=NAME`` | value, time, alarm and metadata |
| ``GET pvs/{pv}/value`` | the value object |
| ``GET pvs/{pv}/info`` | control metadata |
| ``GET pvs/value?pv=A&pv=B``, ``POST pvs/value`` (JSON list) | one item per PV |
| ``GET pvs/info?pv=A&pv=B`` | one metadata object or FAILURE item per PV |
| ``GET pvs/{pv}/plot`` | an array PV as an SVG line plot (``?format=png``: a PNG) |
| ``GET health`` | counts; 503 when an IOC address is unreachable |

Value reads accept ``?max_age=ms`` (serve a monitored value up to that old), ``?fresh=1`` (always
ask the IOC), ``?count=N`` (first N array elements) and ``?encoding=b64`` (pvws base64 arrays).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from mtango.api.common import (
    Route,
    absolute,
    draw_plot,
    json_body,
    make_blueprint,
    picture_response,
    plot_options,
    query_int,
    query_list,
    query_value,
    respond,
)
from mtango.epics.backend import EpicsBackend
from mtango.epics.reads import ReadOptions
from mtango.errors import ApiError, bad_request, failure_body
from mtango.security.access import WRITE
from mtango.security.guard import WriteTarget, note

ROOT = "/epics/rest/v1"
PV = "/pvs/<pv>"
ENCODINGS = ("json", "b64")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def backend(request: Request) -> EpicsBackend:
    return request.app.ctx.epics


def _flag(request: Request, name: str) -> bool:
    raw = query_value(request, name)
    if raw is None:
        return False
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise bad_request(f"{name}={raw!r} must be 1 or 0", "BadParameter")


def read_options(request: Request) -> ReadOptions:
    max_age = query_int(request, "max_age", -1, 0, 86_400_000)
    return backend(request).options(
        None if max_age < 0 else max_age,
        _flag(request, "fresh"),
        query_int(request, "count", 0, 1, 100_000_000),
    )


def encoding(request: Request) -> str:
    value = query_value(request, "encoding", "json")
    if value not in ENCODINGS:
        raise bad_request(f"encoding={value!r} must be json or b64", "BadParameter")
    return value


def one_pv(request: Request) -> str:
    names = query_list(request, "pv")
    if len(names) != 1:
        raise bad_request("name exactly one PV: pvs/NAME or pvs?pv=NAME", "MissingParameter")
    return names[0]


async def root(request: Request) -> HTTPResponse:
    return respond(
        request,
        {
            "pvs": absolute(request, f"{ROOT}/pvs/{{pv}}"),
            "values": absolute(request, f"{ROOT}/pvs/value?pv={{pv}}"),
            "health": absolute(request, f"{ROOT}/health"),
        },
    )


async def pv_full(request: Request, pv: str) -> HTTPResponse:
    epics = backend(request)
    return respond(request, await epics.full(pv, read_options(request), encoding(request)))


async def pv_by_query(request: Request) -> HTTPResponse:
    return await pv_full(request, one_pv(request))


async def pv_value(request: Request, pv: str) -> HTTPResponse:
    epics = backend(request)
    return respond(request, await epics.value(pv, read_options(request), encoding(request)))


async def pv_plot(request: Request, pv: str) -> HTTPResponse:
    """``GET pvs/{pv}/plot``: a waveform as a line plot with its units (``mtango.plot``); the
    read is ``GET pvs/{pv}``'s (``?max_age=``, ``?fresh=``, ``?count=`` apply)."""
    fmt, width, height = plot_options(request)
    body = await backend(request).full(pv, read_options(request), "json")
    content = await draw_plot(body.get("value"), body.get("name", pv),
                              str(body.get("units") or ""), fmt, width, height)
    return picture_response(content, "image/svg+xml" if fmt == "svg" else "image/png",
                            body.get("timestamp"))


async def pv_info(request: Request, pv: str) -> HTTPResponse:
    return respond(request, await backend(request).info(pv))


async def values(request: Request) -> HTTPResponse:
    """Many PVs in one request (``?pv=A&pv=B``), HTTP 200 with one item per name."""
    names = query_list(request, "pv")
    epics = backend(request)
    return respond(request, await epics.values(names, read_options(request), encoding(request)))


async def values_post(request: Request) -> HTTPResponse:
    """The same with the names as a JSON list in the body, for lists too long for a URL."""
    body = json_body(request)
    if isinstance(body, dict):
        body = body.get("pvs", body.get("pv"))
    if not isinstance(body, list) or not all(isinstance(n, str) for n in body):
        raise bad_request('send a JSON list of PV names, e.g. ["A:B", "C:D"]', "BadBody")
    epics = backend(request)
    return respond(request, await epics.values(body, read_options(request), encoding(request)))


async def infos(request: Request) -> HTTPResponse:
    names = query_list(request, "pv")
    if not names:
        raise bad_request("name the PVs: ?pv=A&pv=B", "MissingParameter")
    epics = backend(request)
    outcomes = await asyncio.gather(*(epics.info(n) for n in names), return_exceptions=True)
    items: list[Any] = []
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, ApiError):
            items.append(failure_body(outcome.entries, name=name))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            items.append(outcome)
    return respond(request, items)


def _put_targets(request: Request, params: dict[str, Any]) -> list[WriteTarget]:
    name = backend(request).check(params["pv"])  # 400/403 before anything is sent
    return [WriteTarget("epics", name, {"pv": name})]


def _put_value(request: Request) -> Any:
    """``?v=`` (repeated: an array), else the JSON body."""
    values = query_list(request, "v")
    if values:
        return values if len(values) > 1 else values[0]
    if not request.body.strip():
        raise bad_request("give the value as ?v=... or as a JSON body", "MissingParameter")
    return json_body(request)


async def pv_put(request: Request, pv: str) -> HTTPResponse:
    """``PUT pvs/{pv}/value``: a put with completion (``?wait=0``: without), then the value read
    back, as ``GET pvs/{pv}/value`` answers it."""
    wait = query_value(request, "wait") is None or _flag(request, "wait")
    outcome = await backend(request).write(pv, _put_value(request), wait=wait)
    note(request, before=outcome.before, sent=outcome.sent, after=outcome.after)
    return respond(request, outcome.body)


async def health(request: Request) -> HTTPResponse:
    body, status = await backend(request).health()
    return respond(request, body, status)


ROUTES = [
    Route("", root, "epics_root"),
    Route("/health", health, "epics_health"),
    Route("/pvs", pv_by_query, "epics_pvs"),
    Route("/pvs/value", values, "epics_pvs_value"),
    Route("/pvs/info", infos, "epics_pvs_info"),
    Route(PV, pv_full, "epics_pv"),
    Route(f"{PV}/value", pv_value, "epics_pv_value"),
    Route(f"{PV}/info", pv_info, "epics_pv_info"),
    Route(f"{PV}/plot", pv_plot, "epics_pv_plot"),
    # A read with the names in the body (too many for a URL).
    Route("/pvs/value", values_post, "epics_pvs_value_post", ("POST",)),
    Route(f"{PV}/value", pv_put, "epics_pv_value_put", ("PUT",), action=WRITE,
          targets=_put_targets, audit_action="pv", protocol="epics"),
]


def blueprint() -> Blueprint:
    return make_blueprint("epics", ROOT, ROUTES)
