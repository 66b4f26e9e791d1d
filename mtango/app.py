"""``create_app(config)``: the Sanic application, wired once per worker process.

Backends (PyTango proxies, thread pools) are created in ``before_server_start``, i.e. inside each
worker after it has started, never at import time and never in the parent process: PyTango and
omniORB state must not cross a fork, and every worker needs its own event loop bindings.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import re
import shutil
import time
from itertools import count
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import BadRequest, RequestTimeout, SanicException
from sanic.http import Http
from sanic.response import HTTPResponse
from sanic.response.types import BaseHTTPResponse

from mtango import __version__
from mtango.api import epics as epics_api
from mtango.api import live, ops, pvws, rc3, subscriptions, swagger, web
from mtango.api import main as main_api
from mtango.api import sys as sys_api
from mtango.api.common import check_url, json_response
from mtango.api.cors import Cors
from mtango.config import Config
from mtango.epics.backend import EpicsBackend
from mtango.epics.events import EpicsEvents
from mtango.epics.names import MAX_NAME_LENGTH
from mtango.errors import ApiError, ErrorEntry, failure_body, from_unexpected
from mtango.live.handoff import Handoff
from mtango.live.hub import Hub
from mtango.live.subscriptions import SubscriptionStore
from mtango.security.access import Access
from mtango.security.audit import AuditLog
from mtango.security.guard import check_read
from mtango.stats import Metrics
from mtango.tango.backend import TangoBackend
from mtango.tango.events import TangoEvents
from mtango.worker import CleanOrders, Worker, run_dir

log = logging.getLogger("mtango")
_GC_YOUNG_THRESHOLD = 50_000
SERVER_HEADER = f"mtango-bridge {__version__}"
_app_numbers = count()


def app_name(base: str = "mtango_bridge") -> str:
    """Sanic wants unique application names per process (tests build several apps)."""
    number = next(_app_numbers)
    return base if number == 0 else f"{base}_{number}"


class BridgeRequest(Request):
    """Sanic's request, able to stand in for a request line Sanic could not parse.

    To answer such a request Sanic builds a stand-in request (method ``NONE``) from the URL it
    received, escaping only non-ASCII bytes. A control byte (``GET /tango/rest\\x00``) fails URL
    parsing again there, so the client got no answer and the log a 43-line traceback per request
    (Sanic 25.12). The stand-in gets the URL with those bytes percent-escaped, and short.
    """

    def __init__(self, url_bytes: bytes, headers: Any, version: str, method: str,
                 transport: Any, app: Any, head: bytes = b"", stream_id: int = 0) -> None:
        if method == "NONE":
            url_bytes = _CONTROL_BYTES.sub(lambda m: b"%%%02X" % m[0][0], url_bytes[:_SHOWN_URL])
        super().__init__(url_bytes, headers, version, method, transport, app, head, stream_id)

    async def receive_body(self) -> None:
        """The body, with the request timeout between its pieces, as Sanic has for the head.

        Sanic reads the body after routing, under the response timeout only; and when that fired
        it went on waiting for the rest of the body without any limit (measured: a body declared
        1000 bytes long, 10 sent, held the connection more than 200 s). A body that stops
        arriving now gets a 408, and the connection is closed without reading more of it.
        """
        if self.body:
            return
        # Sanic reads a body only through the request's connection stream, and the bridge serves
        # HTTP/1.1 only (no HTTP/3, no ASGI): that stream is Sanic's Http.
        http = self.stream
        assert isinstance(http, Http), type(http)
        pieces: list[bytes] = []
        stream = aiter(http)
        while True:
            try:
                pieces.append(
                    await asyncio.wait_for(anext(stream), self.app.config.REQUEST_TIMEOUT)
                )
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                http.keep_alive = False
                http.request_body = None  # Sanic would wait for the rest after answering
                raise RequestTimeout("the request body stopped arriving") from None
        self.body = b"".join(pieces)


_CONTROL_BYTES = re.compile(rb"[\x00-\x20\x7f-\xff]")
_SHOWN_URL = 200


class RateLimitedLog:
    """One warning per ``interval`` seconds at most, saying how many were left out meanwhile."""

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        self.logger, self.interval = logger, interval
        self.last = -interval
        self.left_out = 0

    def warning(self, message: str) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.left_out += 1
            return
        self.logger.warning("%s (%d more since the last such line)", message, self.left_out)
        self.last, self.left_out = now, 0


# Requests Sanic cannot parse come from scanners and broken clients, often in bursts; one line a
# minute says that they come without letting them fill the disk.
_malformed = RateLimitedLog(log, 60.0)


def max_body_bytes(config: Config) -> int:
    """The largest request body an endpoint needs; a larger one is refused (413) unread.

    The largest is a POST of ``epics_batch_max`` PV names of the longest kind, every character
    escaped in JSON (two bytes), in quotes, with a separator and a pretty-printer's line break
    and indentation, plus 64 KiB for anything else: 5.2 MB with the defaults. Sanic's own limit,
    100 MB, let a client declare 90 MB, send 10 bytes, and hold the connection (measured: 160 s
    until a 503), and would have let it send 100 MB.
    """
    return 65536 + config.epics_batch_max * (2 * MAX_NAME_LENGTH + 8)


_SANITIZE_ORIGINAL = BaseHTTPResponse._sanitize_header_value


def create_app(config: Config, name: str | None = None) -> Sanic:
    app = Sanic(name or app_name(), request_class=BridgeRequest)
    app.config.update(
        {
            "FALLBACK_ERROR_FORMAT": "json",
            "KEEP_ALIVE_TIMEOUT": config.http_keep_alive_timeout,
            "REQUEST_TIMEOUT": config.http_request_timeout,
            # Long-polling answers may take 30 s; a slow Tango call is bounded by its timeout.
            "RESPONSE_TIMEOUT": max(60, 4 * config.tango_timeout_ms // 1000),
            "REQUEST_MAX_SIZE": max_body_bytes(config),
            # X-Forwarded-* believed from this many proxies (0: none; Sanic's own parsing).
            "PROXIES_COUNT": config.proxies_count or None,
        }
    )
    app.ctx.config = config
    cors = Cors(config.cors_origins)
    _fast_header_sanitising()
    app.blueprint(main_api.blueprint(config.app_base))
    app.blueprint(rc3.blueprint(config.app_base))
    app.blueprint(sys_api.blueprint(config.app_base))
    app.blueprint(swagger.blueprint(config))
    app.blueprint(epics_api.blueprint())
    app.blueprint(subscriptions.blueprint())
    app.blueprint(live.blueprint())
    app.blueprint(pvws.blueprint())
    app.blueprint(ops.blueprint())
    app.blueprint(web.blueprint(config))

    @app.before_server_start
    async def start_backends(app: Sanic) -> None:
        started_at = float(os.environ.get("MTANGO_STARTED_AT") or time.time())
        metrics = Metrics(started_at)
        tango = TangoBackend(config, on_call=metrics.upstream)
        tango.devices.observe(metrics.cache_observer("devices"))
        tango.attributes.observe(metrics.cache_observer("attributes"))
        tango.start()
        # Tango events and caproto callbacks reach this loop through one hand-off.
        handoff = Handoff(asyncio.get_running_loop())
        # One caproto client context per worker, created here, after the fork.
        epics = EpicsBackend(config)
        epics.start(handoff)
        tango_events = TangoEvents(tango, handoff, config.tango_poll_ms)
        epics_events = EpicsEvents(epics)
        hub = Hub({"tango": tango_events, "epics": epics_events}, config.events_linger_s)
        tango_events.bind(hub)
        epics_events.bind(hub)
        app.ctx.metrics, app.ctx.tango, app.ctx.epics, app.ctx.hub = metrics, tango, epics, hub
        app.ctx.access = Access(config)
        app.ctx.audit = AuditLog(config.audit_log)
        directory, app.ctx.own_run_dir = run_dir()
        app.ctx.run_dir = directory
        app.ctx.stopping = False
        app.ctx.subscriptions = SubscriptionStore(directory)
        app.ctx.streams = set()
        app.ctx.worker = Worker(metrics, CleanOrders(directory), tango, epics, hub=hub,
                                subscriptions=app.ctx.subscriptions, streams=app.ctx.streams,
                                config=config)
        app.ctx.worker.start()
        # Everything alive now (modules, routes, backends) lives as long as the worker: out of the
        # cycle collector's sight. Its full collections then cost a few ms instead of about 50
        # (measured: a cold 1000-PV EPICS read, which creates ~100k objects, triggered one).
        gc.freeze()
        # Young collections after every 700 new containers (CPython's default) ran ~150 times
        # in that read and took a third of it (measured: 540 -> 370 ms of CPU). Almost all of a
        # request's objects are freed by reference counting; the collector only has to find
        # cycles, and 50,000 containers of them at most is a few MB.
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    @app.before_server_stop
    async def end_streams(app: Sanic) -> None:
        # Before Sanic waits for open connections: streams and long polls would hold it for
        # its whole graceful-shutdown timeout (measured: 10 s per stopping worker, then a
        # traceback "Event loop stopped before Future completed"). Each open client gets its
        # last word (mtango.shutdown): SSE streams a "reconnect" event, pvws sockets a 1012
        # close; long polls answer as at their timeout.
        app.ctx.stopping = True
        hub = getattr(app.ctx, "hub", None)
        if hub is not None:
            hub.end_listeners()
        for client in tuple(getattr(app.ctx, "streams", ())):
            client.end()

    @app.after_server_stop
    async def stop_backends(app: Sanic) -> None:
        worker = getattr(app.ctx, "worker", None)
        if worker is not None:
            await worker.stop()
            worker.hub.close()
            worker.tango.close()
            await worker.epics.close()
        audit = getattr(app.ctx, "audit", None)
        if audit is not None:
            audit.close()
        if getattr(app.ctx, "own_run_dir", False):
            # An in-process server's own (the tests start hundreds: 200 left behind an hour).
            shutil.rmtree(app.ctx.run_dir, ignore_errors=True)

    @app.on_request
    async def before_route(request: Request) -> HTTPResponse | None:
        # One request middleware rather than four: each costs a coroutine and Sanic's dispatch.
        request.ctx.started = time.perf_counter()
        if request.method == "OPTIONS":
            # A preflight runs no route and no permission check (browsers send no credentials).
            return cors.preflight(request)
        tango = getattr(request.app.ctx, "tango", None)
        if tango is not None:
            # Request middleware and handler run in one task: the deadline reaches every call.
            tango.begin_request()
        # Before any route: a path or query that is not percent-encoded UTF-8 is a 400 for all.
        check_url(request)
        # Reads need a user with read_access: authenticated; writes are guarded by their routes.
        await check_read(request)
        return None

    @app.on_response
    async def server_header(request: Request, response: HTTPResponse) -> None:
        response.headers["x-mtango"] = SERVER_HEADER
        metrics = getattr(request.app.ctx, "metrics", None)
        if metrics is not None:
            # Which worker process answered (behind a load balancer; tests of shared state).
            response.headers["x-mtango-worker"] = metrics.worker
        started = getattr(request.ctx, "started", None)
        if metrics is not None and started is not None:
            endpoint = _endpoint(request.route.path) if request.route is not None else "unmatched"
            metrics.observe_request(
                endpoint, request.method, response.status, time.perf_counter() - started
            )
        if response.content_type is None and not response.body:
            # An empty answer built without a type: Sanic would send "content-type: None".
            response.content_type = "text/plain; charset=utf-8"
        cors.apply(request, response)

    app.error_handler.add(Exception, _error_response)
    return app


def _fast_header_sanitising() -> None:
    """Sanic strips CR, LF and NUL from every header name and value with ``str.translate``,
    which copies the string character by character: 11% of a live read's CPU (py-spy, nine
    headers an answer). Header values almost never hold those characters; three ``in`` scans
    find out and hand the rare value that does to Sanic's own sanitiser."""
    original = _SANITIZE_ORIGINAL

    def sanitize(value: str) -> str:
        if "\r" in value or "\n" in value or "\x00" in value:
            return original(value)
        return value

    BaseHTTPResponse._sanitize_header_value = staticmethod(sanitize)  # type: ignore[method-assign]


@functools.lru_cache(maxsize=512)
def _endpoint(path: str) -> str:
    """A route's URL template as the metrics label: ``/a/<host>``, not ``a/<host:str>``."""
    return "/" + re.sub(r"<(\w+):[^>]+>", r"<\1>", path)


def _error_response(request: Request, exc: Exception) -> HTTPResponse:
    """Every failure, from any layer, answered with the same FAILURE body."""
    config: Config = request.app.ctx.config
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, SanicException):
        if isinstance(exc, BadRequest) and request.route is None:
            # The stand-in request has no connection info yet: the peer comes from the socket.
            peer = (request.transport.get_extra_info("peername") or ("?",))[0]
            _malformed.warning(f"malformed request from {peer}: {ascii(str(exc))[:120]}")
        status = getattr(exc, "status_code", 500) or 500
        reason = type(exc).__name__
        error = ApiError(ErrorEntry(reason, str(exc) or reason, "ERR", request.path), status)
    else:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        error = from_unexpected(exc)
    # Headers Sanic's own errors carry (405's Allow, RFC 9110) are kept, and those of ours (401's
    # WWW-Authenticate).
    headers = dict(getattr(exc, "headers", None) or {}) if isinstance(
        exc, (SanicException, ApiError)) else {}
    _drop_tracebacks(exc)
    return json_response(
        failure_body(error.entries), error.http_status(config.error_status), headers or None
    )


def _drop_tracebacks(exc: BaseException | None) -> None:
    """Answered (and logged when unexpected): its tracebacks are of no more use. They are what
    keeps a failed request's objects alive: a future holds the exception, whose traceback holds
    the frame that holds the future. Such cycles wait for the cycle collector, whose young
    threshold is large (``_GC_YOUNG_THRESHOLD``): 105 objects a failed read, and 20,000 unknown
    attribute names grew a worker by 11.5 MB for good (bench/suite.py case 11); 1.4 MB now."""
    for _ in range(8):  # the exception, what caused it, what that came from...
        if exc is None:
            return
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__

