"""rc3 long polling: ``.../attributes/{attr}/{event}``, event in change, periodic, archive, user.

- ``state=INITIAL``: the current value at once, and the attribute is subscribed (the shared
  upstream lingers ``events_linger_s`` for the CONTINUATION that follows);
- ``state=CONTINUATION`` or no state: the next event, waiting up to ``timeout`` ms (default and
  most 30,000, as the Java server); when none comes, the latest value (rc3) or 503 (rc4);
- ``last=<ms>``: the events buffered since that time, as an array, waiting as above for one.

The answer has the read shape ``{name, value, quality, timestamp}`` (plus links); an upstream
failure is answered as the FAILURE body of a failed read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse

from mtango.api.common import Route, check_name, device_url, query_int, query_value, respond
from mtango.api.rc3 import target
from mtango.api.rc3.attributes import ATTR
from mtango.errors import (
    RC4_STATUS,
    ApiError,
    ErrorEntry,
    FailureKind,
    bad_request,
    classify_reasons,
)
from mtango.live.hub import ClientQueue, Event, Hub
from mtango.tango.events import check_event_type, tango_key

MAX_WAIT_MS = 30_000
STATES = ("INITIAL", "CONTINUATION")


def _item(event: Event, links: dict[str, str]) -> dict[str, Any]:
    """An event as an answer's item: the value object with links, or its FAILURE body."""
    return event.body if event.error else {**event.body, "_links": links}


def _answer(request: Request, event: Event, links: dict[str, str]) -> HTTPResponse:
    """One event as the answer: a failure has the status of a failed read (200 in rc3)."""
    status = 200
    if event.error and request.app.ctx.config.error_status == "rc4":
        status = RC4_STATUS[classify_reasons([e["reason"] for e in event.body["errors"]])]
    return respond(request, _item(event, links), status=status)


async def _next(queue: ClientQueue, timeout: float, skip_first_value: bool = False
                ) -> Event | None:
    """The next event put into ``queue`` (already listening) within ``timeout`` s.

    ``skip_first_value``: the upstream is new, and its first event is the value the attribute
    already had when it was subscribed, not a change: wait for the one after it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        batch = await queue.take(max(0.0, deadline - loop.time()))
        if skip_first_value and batch and not batch[0][1].error:
            batch = batch[1:]
            skip_first_value = False
        if batch or loop.time() >= deadline or queue.ended:
            return batch[-1][1] if batch else None


async def long_poll(request: Request, host: str, port: str, domain: str, family: str,
                    member: str, attr: str, event: str) -> HTTPResponse:
    tango, host_key, device = target.device(request, host, port, domain, family, member)
    name = check_name(attr, "attribute")
    check_event_type(event)
    state = query_value(request, "state")
    if state is not None and state.upper() not in STATES:
        raise bad_request(f"state must be INITIAL or CONTINUATION, not {state!r}", "BadState")
    wait_s = query_int(request, "timeout", MAX_WAIT_MS, 0, 10**9) / 1000
    wait_s = min(wait_s, MAX_WAIT_MS / 1000)
    raw_last = query_value(request, "last")
    last = query_int(request, "last", 0, 0, 2**53) if raw_last is not None else None

    config = request.app.ctx.config
    hub: Hub = request.app.ctx.hub
    key = tango_key(host_key, device, name, event)
    url = device_url(request, host, port, device, "attributes", name)
    links = {"_self": f"{url}/{event}", "_parent": url, "_value": f"{url}/value"}
    queue = ClientQueue(config.events_queue_size, hub.stats)
    upstream = hub.listen(key, queue)
    new = upstream.latest is None
    try:
        if state is not None and state.upper() == "INITIAL":
            if upstream.latest is None:
                # A new subscription delivers its current value first; wait for it (at most a
                # Tango timeout), so that what INITIAL answers is what later events follow.
                await _next(queue, min(wait_s, tango.timeout))
            if upstream.latest is not None:
                return _answer(request, upstream.latest, links)
            value = await tango.read_attribute(host_key, device, name)
            return respond(request, {**value, "_links": links} if "value" in value else value)
        if last is not None:
            earlier = hub.since(key, last)
            if earlier:
                return respond(request, [_item(e, links) for e in earlier])
        arrived = await _next(queue, wait_s, skip_first_value=new)
        if arrived is not None:
            if last is not None:
                return respond(request, [_item(arrived, links)])
            return _answer(request, arrived, links)
        if config.error_status == "rc4":
            raise ApiError(
                ErrorEntry(
                    "API_EventTimeout",
                    f"No {event} event from {device}/{name} within {int(wait_s * 1000)} ms",
                    "ERR", "LongPoll"),
                kind=FailureKind.UNAVAILABLE)
        latest = upstream.latest
        if last is not None:
            return respond(request, [])
        if latest is not None:
            return _answer(request, latest, links)
        value = await tango.read_attribute(host_key, device, name)
        return respond(request, {**value, "_links": links} if "value" in value else value)
    finally:
        hub.unlisten(key, queue)


ROUTES = [
    Route(f"{ATTR}/<event>", long_poll, "attribute_event"),
]
