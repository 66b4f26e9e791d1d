"""``{app_base}/sys``: what the bridge is doing, for the people who run it.

Every figure is for the whole server: the answering worker reads all workers' metrics (see
``mtango.stats``), and ``clean/*`` orders every worker to empty its cache (see ``mtango.worker``)
and answers once they all have.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from mtango import __version__, stats
from mtango.api.common import (
    Route,
    absolute,
    check_name,
    device_name,
    make_blueprint,
    query_list,
    respond,
)
from mtango.errors import bad_request, not_found
from mtango.security.access import ANONYMOUS, Access

CLEAN_WAIT_SECONDS = 2.0
_SECRET = re.compile(r"pass(word)?|secret|token|credential|api_?key|auth", re.IGNORECASE)
# Settings whose names look like a secret's but that say how, not with what (auth: none|basic).
_NOT_SECRET = frozenset({"auth", "auth_realm"})


def redact(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings with the values of anything that looks like a secret replaced by ``"***"``."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out[key] = redact(value)
        elif _SECRET.search(key) and key not in _NOT_SECRET and value not in (None, "", [], ()):
            out[key] = "***"
        else:
            out[key] = value
    return out


def _url(request: Request, *parts: str) -> str:
    return absolute(request, "/".join([request.app.ctx.config.app_base, "sys", *parts]))


def _cache_name(cache: str) -> str:
    if cache not in stats.CACHES:
        raise not_found(f"no cache named {cache!r}; caches: {', '.join(stats.CACHES)}",
                        "UnknownCache")
    return cache


async def root(request: Request) -> HTTPResponse:
    """Links, in mtango-py's shape (``gc`` and ``active`` lists) plus named ones."""
    body = {
        "stats": _url(request, "stats"),
        "config": _url(request, "config"),
        "subscriptions": _url(request, "subscriptions"),
        "access": _url(request, "access"),
        "cache": {c: _url(request, "cache", c) for c in stats.CACHES},
        "clean": {c: _url(request, "clean", c) for c in stats.CACHES},
        "gc": [_url(request, "clean", c) for c in stats.CACHES],
        "active": [_url(request, "cache", c) for c in stats.CACHES],
        "version": f"mtango-bridge {__version__}",
    }
    return respond(request, body)


async def config(request: Request) -> HTTPResponse:
    body = redact(request.app.ctx.config.as_dict())
    body["version"] = __version__
    return respond(request, body)


async def stats_(request: Request) -> HTTPResponse:
    request.app.ctx.worker.sample(full=True)
    metrics: stats.Metrics = request.app.ctx.metrics
    return respond(request, stats.summary(metrics.collect()))


async def cache(request: Request, cache: str) -> HTTPResponse:
    request.app.ctx.worker.sample()
    metrics: stats.Metrics = request.app.ctx.metrics
    return respond(request, stats.cache_info(metrics.collect(), _cache_name(cache)))


async def clean(request: Request, cache: str) -> HTTPResponse:
    """Empty ``cache`` in every worker; 204 once each live worker reports it has done so."""
    cache = _cache_name(cache)
    worker = request.app.ctx.worker
    generation = worker.orders.order(cache)
    worker.carry_out_orders()  # this worker at once; the others within ~0.1 s
    metrics: stats.Metrics = request.app.ctx.metrics
    deadline = time.monotonic() + CLEAN_WAIT_SECONDS
    while time.monotonic() < deadline:
        done = stats.clean_generations(metrics.collect(), cache)
        if all(done.get(w, 0) >= generation for w in stats.workers(metrics.collect())):
            break
        await asyncio.sleep(0.02)
    return HTTPResponse(status=204)


def live_snapshot(request: Request) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                             dict[str, dict[str, Any]]]:
    """Upstreams, clients (streams, sockets) and per-worker figures of every live worker."""
    worker = request.app.ctx.worker
    worker.publish_live()  # this worker's figures as of now; the others' are at most 1 s old
    metrics: stats.Metrics = request.app.ctx.metrics
    live = set(stats.workers(metrics.collect())) | {metrics.worker}
    upstreams: list[dict[str, Any]] = []
    clients: list[dict[str, Any]] = []
    per_worker: dict[str, dict[str, Any]] = {}
    for path in sorted(worker.orders.directory.glob("live-*.json")):
        try:
            figures = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        name = figures.pop("worker", path.stem[5:])
        if name not in live:
            continue
        found = figures.pop("upstreams")
        upstreams.extend({**u, "worker": name} for u in found)
        clients.extend({**c, "worker": name} for c in figures.pop("clients", []))
        per_worker[name] = {"upstreams": len(found), **figures}
    return upstreams, clients, per_worker


async def subscriptions(request: Request) -> HTTPResponse:
    """Every upstream subscription of every worker, with totals and a per-worker breakdown."""
    upstreams, clients, per_worker = live_snapshot(request)
    totals = {key: sum(w[key] for w in per_worker.values())
              for key in ("upstreams", "listeners", "streams", "events", "errors", "deliveries",
                          "coalesced")}
    totals["subscriptions"] = request.app.ctx.subscriptions.count()
    return respond(request, {"upstreams": upstreams, "streams": clients, "totals": totals,
                             "workers": per_worker})


MAX_ACCESS_TARGETS = 1000


def _access_targets(request: Request) -> list[tuple[str, str, str, str]]:
    """(kind, target as given, system, name for the role rules) of ``?tango=`` and ``?pv=``."""
    found: list[tuple[str, str, str, str]] = []
    for text in query_list(request, "tango"):
        parts = text.split("/")
        if len(parts) != 5 or ":" not in parts[0]:
            raise bad_request(f"Tango target {text!r} is not HOST:PORT/domain/family/member/"
                              "name (an attribute or a command)", "BadTarget")
        host, _, port = parts[0].rpartition(":")
        request.app.ctx.tango.host_key(host, port)  # 403 outside the allow-list
        device = device_name(*parts[1:4])
        name = check_name(parts[4], "attribute or command")
        found.append(("tango", text, "tango", f"{device}/{name}".lower()))
    for text in query_list(request, "pv"):
        found.append(("pv", text, "epics", request.app.ctx.epics.check(text)))
    if len(found) > MAX_ACCESS_TARGETS:
        raise bad_request(f"{len(found)} targets; at most {MAX_ACCESS_TARGETS} per request",
                          "TooManyTargets")
    return found


async def access(request: Request) -> HTTPResponse:
    """Whether writes are on, and for each target whether this request's user may write it:
    the permission check of a write (``Access.check``), asked without writing anything."""
    checker: Access = request.app.ctx.access
    config = request.app.ctx.config
    wanted = _access_targets(request)
    principal = await checker.identify(request) or ANONYMOUS
    items = []
    for kind, text, system, name in wanted:
        refusal = await checker.refusal(request, system, name)
        item = {"target": text, "kind": kind, "write": refusal is None}
        if refusal is not None:
            item["reason"] = refusal.entries[0].reason
        items.append(item)
    return respond(request, {"user": principal.user, "auth": config.auth,
                             "writes": config.writes == "on", "targets": items})


ROUTES = [
    Route("", root, "sys_root"),
    Route("/config", config, "sys_config"),
    Route("/stats", stats_, "sys_stats"),
    Route("/subscriptions", subscriptions, "sys_subscriptions"),
    Route("/access", access, "sys_access"),
    Route("/cache/<cache>", cache, "sys_cache"),
    Route("/clean/<cache>", clean, "sys_clean"),
]


def blueprint(app_base: str) -> Blueprint:
    return make_blueprint("sys", f"{app_base}/sys", ROUTES)
