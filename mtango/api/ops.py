"""``/metrics`` and ``/health/*``: for Prometheus and container orchestrators (not under app_base).

``/health/live`` says the process answers HTTP. ``/health/ready`` says it can do its job: the
configured Tango database answers and, when EPICS is configured, the Channel Access context is up;
from SIGTERM on it answers 503 ``ShuttingDown`` (``mtango.shutdown``).
"""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from mtango.api.common import Route, make_blueprint, respond
from mtango.errors import ApiError, ErrorEntry, failure_body
from mtango.shutdown import is_stopping

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: Request) -> HTTPResponse:
    request.app.ctx.worker.sample(full=True)
    return HTTPResponse(request.app.ctx.metrics.exposition(), content_type=PROMETHEUS_TEXT)


async def live(request: Request) -> HTTPResponse:
    return respond(request, {"status": "live"})


async def ready(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    if getattr(ctx, "stopping", False) or is_stopping(getattr(ctx, "run_dir", None)):
        # SIGTERM came: load balancers are to send nothing new (mtango.shutdown); the process
        # still serves what comes meanwhile.
        problem = ErrorEntry("ShuttingDown", "the bridge is shutting down (SIGTERM); "
                             "send requests to another replica", "ERR", "/health/ready")
        return respond(request, failure_body([problem], checks={"shutdown": "stopping"}),
                       status=503)
    checks: dict[str, str] = {}
    problems: list[ErrorEntry] = []
    config = request.app.ctx.config
    if config.tango_host:
        tango = request.app.ctx.tango
        try:
            await tango.database_info(tango.hosts()[0])
            checks["tango"] = "ok"
        except ApiError as exc:
            checks["tango"] = "failed"
            problems.append(ErrorEntry("TangoNotReady", f"Tango database {config.tango_host} "
                                       f"does not answer: {exc}", "ERR", "/health/ready"))
    epics = getattr(request.app.ctx, "epics", None)
    if epics is not None and epics.configured:
        if epics.running:
            checks["epics"] = "ok"
        else:
            checks["epics"] = "failed"
            problems.append(ErrorEntry("EpicsNotReady", "the Channel Access context is not up",
                                       "ERR", "/health/ready"))
    if problems:
        return respond(request, failure_body(problems, checks=checks), status=503)
    return respond(request, {"status": "ready", "checks": checks})


ROUTES = [
    Route("/metrics", metrics, "metrics"),
    Route("/health/live", live, "health_live"),
    Route("/health/ready", ready, "health_ready"),
]


def blueprint() -> Blueprint:
    return make_blueprint("ops", "", ROUTES)
