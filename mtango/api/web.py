"""The built-in web page: ``/`` for browsers, its static files under ``/web``.

The page (``mtango/web/``: ``index.html``, ``app.js``, ``style.css``; package data, no build step,
nothing fetched from elsewhere) is a client of the bridge's own APIs: rc3 for databases, devices,
attributes, commands and properties, ``/live/stream`` for every live value of a view (one
``EventSource``), ``{app_base}/sys/access`` for whether to offer write controls, and the write
endpoints themselves.

- ``GET /`` answers the page to a client whose ``Accept`` names ``text/html`` (a browser's
  navigation); any other client gets the JSON 404 it always got there (``Vary: Accept``). The page
  is revalidated on every load (``no-cache`` with an ``ETag``), and names its assets with their
  content hash (``/web/app.js?v=...``), so a new release is picked up at once.
- ``GET /web/<file>``: the assets, ``Cache-Control: public, max-age=3600``, ``ETag`` and
  ``Last-Modified``; ``If-None-Match`` (or ``If-Modified-Since``) answers 304 without a body.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from functools import cache
from html import escape
from pathlib import Path

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from mtango.api.common import Route, make_blueprint
from mtango.config import Config
from mtango.errors import not_found

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
PREFIX = "/web"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAGE = "index.html"
PAGE_TYPE = "text/html; charset=utf-8"
ASSET_CACHE = "public, max-age=3600"
# The page only ever talks to the bridge that served it (images of canvases are data: URLs).
PAGE_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
               "script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'self'")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str
    modified: int  # seconds since the epoch

    @property
    def headers(self) -> dict[str, str]:
        return {"ETag": self.etag, "Last-Modified": formatdate(self.modified, usegmt=True)}


def _static(body: bytes, content_type: str, modified: float) -> StaticFile:
    digest = hashlib.sha256(body).hexdigest()[:20]
    return StaticFile(body, content_type, f'"{digest}"', int(modified))


@cache
def asset(name: str) -> StaticFile | None:
    if name not in ASSETS:
        return None
    path = WEB_DIR / name
    return _static(path.read_bytes(), ASSETS[name], path.stat().st_mtime)


@cache
def page(config: Config) -> StaticFile:
    """``index.html`` with the configured ``app_base`` and the assets' versions filled in."""
    path = WEB_DIR / PAGE
    text = path.read_text(encoding="utf-8").replace(
        "{{app_base}}", escape(config.app_base, quote=True))
    for name in ASSETS:
        found = asset(name)
        assert found is not None
        text = text.replace(f"{{{{v:{name}}}}}", found.etag.strip('"'))
    return _static(text.encode("utf-8"), PAGE_TYPE, path.stat().st_mtime)


def wants_html(request: Request) -> bool:
    """Whether the client asked for HTML by name (browsers do; ``*/*`` alone is not asking)."""
    for item in request.headers.get("accept", "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() in ("text/html", "application/xhtml+xml"):
            weights = [p[2:] for p in params if p.replace(" ", "").startswith("q=")]
            try:
                return not weights or float(weights[0]) > 0
            except ValueError:
                return True
    return False


def not_modified(request: Request, found: StaticFile) -> bool:
    match = request.headers.get("if-none-match")
    if match is not None:
        return found.etag in {tag.strip().removeprefix("W/") for tag in match.split(",")} or (
            match.strip() == "*")
    since = request.headers.get("if-modified-since")
    if since:
        try:
            return int(parsedate_to_datetime(since).timestamp()) >= found.modified
        except (TypeError, ValueError, OverflowError):
            return False
    return False


def serve(request: Request, found: StaticFile, cache_control: str,
          extra: dict[str, str] | None = None) -> HTTPResponse:
    headers = {**found.headers, "Cache-Control": cache_control, **(extra or {})}
    if not_modified(request, found):
        return HTTPResponse(status=304, headers=headers)
    return HTTPResponse(found.body, headers=headers, content_type=found.content_type)


async def index(request: Request) -> HTTPResponse:
    if not wants_html(request):
        # What every API client got at "/" before the page existed (app_base cannot be "/").
        error = not_found(f"Requested URL {request.path.lstrip('/')} not found",
                          origin=request.path)
        error.headers = {"Vary": "Accept"}
        raise error
    return serve(request, page(request.app.ctx.config), "no-cache",
                 {"Vary": "Accept", "Content-Security-Policy": PAGE_POLICY,
                  "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"})


async def static(request: Request, name: str) -> HTTPResponse:
    found = asset(name)
    if found is None:
        raise not_found(f"no file {name!r} in {PREFIX}/ (files: {', '.join(ASSETS)})")
    return serve(request, found, ASSET_CACHE, {"X-Content-Type-Options": "nosniff"})


ROUTES = [
    Route("/", index, "web_page"),
    Route(f"{PREFIX}/<name>", static, "web_file"),
]


def blueprint(config: Config) -> Blueprint:
    # Built once per app; the files are read when first asked for (then kept: package data).
    del config
    return make_blueprint("web", "", ROUTES)
