"""CORS for browser clients: the headers of every answer, and preflights answered here.

tangojs sends credentials and an ``Authorization`` header, so an allowed origin is echoed (a
credentialed request may not get ``*``) with ``Access-Control-Allow-Credentials: true``. A
preflight (``OPTIONS``) is answered by the request middleware before any route runs: no Tango or
EPICS call, no permission check (browsers send preflights without credentials).

Why not sanic-cors (used until December 2026): it formatted a debug message with its options on
every request and matched every path against its resources; with Sanic's header sanitising it was
a fifth of a live read's CPU (py-spy, ``bench/suite.py`` case 3). Here the headers of each origin
are computed once, and an answer costs a dict update.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sanic.response import HTTPResponse

ALLOW_HEADERS = ("Authorization", "Content-Type", "Accept", "X-Requested-With")
ALLOW_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE")
# Content-Range: the JS client reads the range of partial lists; x-mtango-from-events: reads
# answered from events.
EXPOSE_HEADERS = ("Content-Range", "Last-Modified", "x-mtango", "x-mtango-from-events")
MAX_AGE_S = 600


class Cors:
    """The CORS answer of one configuration (``cors_origins``: ``*`` or exact origins)."""

    def __init__(self, origins: Iterable[str]) -> None:
        listed = tuple(o.strip().rstrip("/") for o in origins if o.strip())
        self.any_origin = not listed or "*" in listed
        self.origins = frozenset(listed) - {"*"}
        common = {"Access-Control-Allow-Credentials": "true",
                  "Access-Control-Expose-Headers": ", ".join(EXPOSE_HEADERS)}
        # What varies with the request's Origin says so (caches must not mix origins); one
        # allowed origin gets the same answer whatever the request.
        self._vary = self.any_origin or len(self.origins) > 1
        self._fixed: dict[str, str] | None = None
        if self.any_origin:
            self._fixed = {"Access-Control-Allow-Origin": "*", **common, "Vary": "Origin"}
        elif len(self.origins) == 1:
            self._fixed = {"Access-Control-Allow-Origin": next(iter(self.origins)), **common}
        self._common = common
        self._by_origin: dict[str, dict[str, str]] = {}
        self._allowed_headers = {h.lower(): h for h in ALLOW_HEADERS}

    def headers(self, origin: str | None) -> dict[str, str] | None:
        """The headers of an answer to a request from ``origin`` (None: not allowed)."""
        if origin is None:
            return self._fixed
        found = self._by_origin.get(origin)
        if found is not None:
            return found
        if not (self.any_origin or origin in self.origins):
            return None
        found = {"Access-Control-Allow-Origin": origin, **self._common}
        if self._vary:
            found["Vary"] = "Origin"
        if len(self._by_origin) < 1024:  # bounded: origins are chosen by clients
            self._by_origin[origin] = found
        return found

    def apply(self, request: Any, response: HTTPResponse) -> None:
        found = self.headers(request.headers.get("origin"))
        if found is not None:
            vary = response.headers.get("vary")
            response.headers.update(found)
            if vary and "Vary" in found:  # an answer that varies by more (the page: Accept)
                response.headers["Vary"] = f"{vary}, {found['Vary']}"

    def preflight(self, request: Any) -> HTTPResponse:
        """The answer to an ``OPTIONS`` request (its CORS headers come with ``apply``)."""
        response = HTTPResponse(status=200, content_type="text/plain; charset=utf-8")
        method = request.headers.get("access-control-request-method", "").strip().upper()
        if method in ALLOW_METHODS and self.headers(request.headers.get("origin")) is not None:
            asked = request.headers.get("access-control-request-headers", "")
            granted = [self._allowed_headers[h.strip().lower()] for h in asked.split(",")
                       if h.strip().lower() in self._allowed_headers]
            response.headers.update({
                "Access-Control-Allow-Methods": ", ".join(ALLOW_METHODS),
                "Access-Control-Max-Age": str(MAX_AGE_S),
            })
            if granted:
                response.headers["Access-Control-Allow-Headers"] = ", ".join(granted)
        return response
