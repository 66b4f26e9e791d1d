"""Write routes, guarded and audited in one place.

A route table says which routes write (``Route(..., action=WRITE, targets=...)``);
``mtango.api.common.make_blueprint`` wraps their handlers with ``guarded``, so no handler checks
anything itself. Before the handler runs, ``Access.check`` decides for every target of the request
(``targets`` names them from the URL: a Tango ``device/member`` or a PV); a refusal is audited and
answered (401/403) without touching anything. The handler then does the write through its backend
and tells what happened per target with ``note`` (value before, value sent, value after); every
note becomes an audit line, and so does a failure the handler raises. Reads are checked by the
app's request middleware (``check_read``), for ``read_access: authenticated``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mtango.errors import ApiError, ErrorEntry
from mtango.security.access import (
    ANONYMOUS,
    READ,
    WRITE,
    Access,
    Principal,
    basic_credentials,
)
from mtango.security.audit import AuditLog


@dataclass(frozen=True)
class WriteTarget:
    """What one write touches: ``system`` "tango" or "epics", ``name`` for the role rules
    (``device/member`` in lower case, or the PV name), ``fields`` for the audit line."""

    system: str
    name: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Note:
    target: WriteTarget
    before: Any
    sent: Any
    after: Any
    error: ApiError | None


TargetsOf = Callable[[Any, dict[str, Any]], list[WriteTarget]]
Handler = Callable[..., Awaitable[Any]]


def _address(request: Any) -> str:
    return str(request.remote_addr or request.ip or "")


def _status(request: Any, error: ApiError) -> int:
    """The HTTP status the error is answered with (a Tango failure's depends on the mode)."""
    return error.http_status(request.app.ctx.config.error_status)


def _result(error: ApiError) -> str:
    """A 401/403 from below the guard (an IOC's access rights) refused the write before anything
    was sent; anything else failed."""
    return "refused" if error.status in (401, 403) else "failed"


def _reason(error: ApiError) -> str:
    first = error.entries[0] if error.entries else None
    return f"{first.reason}: {first.description}" if first else "error"


def record(request: Any, principal: Principal, protocol: str, action: str, target: WriteTarget,
           result: str, started: float, status: int | None, reason: str | None = None,
           before: Any = None, sent: Any = None, after: Any = None) -> None:
    audit: AuditLog = request.app.ctx.audit
    audit.record(user=principal.user, auth=principal.method, address=_address(request),
                 protocol=protocol, action=action, target=target.fields, result=result,
                 started=started, status=status, reason=reason, before=before, sent=sent,
                 after=after)


def failure_of(item: Any) -> ApiError | None:
    """The error of a FAILURE item of a many-target answer (``None`` for a value)."""
    if isinstance(item, dict) and item.get("errors"):
        entries = [ErrorEntry(str(e.get("reason", "")), str(e.get("description", "")),
                              str(e.get("severity", "ERR")), str(e.get("origin", "")))
                   for e in item["errors"]]
        return ApiError(entries, status=200)
    return None


def note(request: Any, *, index: int = 0, before: Any = None, sent: Any = None,
         after: Any = None, error: ApiError | None = None) -> None:
    """What a guarded handler did to its ``index``-th target (an ``error`` for a target that
    failed while the request as a whole answered)."""
    target = request.ctx.write_targets[index]
    request.ctx.write_notes.append(_Note(target, before, sent, after, error))


async def authorize(request: Any, protocol: str, action: str, targets: list[WriteTarget],
                    started: float) -> Principal:
    """The principal allowed to write every one of ``targets``; otherwise the refusal is
    audited (one line per target) and raised."""
    access: Access = request.app.ctx.access
    principal = ANONYMOUS
    try:
        if not targets:
            principal = await access.check(request, WRITE)
        for target in targets:
            principal = await access.check(request, WRITE, target.system, target.name)
    except ApiError as exc:
        try:
            who = await access.identify(request) or ANONYMOUS
        except ApiError:
            who = Principal(_claimed_user(request), (), "rejected")
        for target in targets or [WriteTarget("", "", {})]:
            record(request, who, protocol, action, target, "refused", started,
                   _status(request, exc), _reason(exc))
        raise
    return principal


def _claimed_user(request: Any) -> str:
    """The user name a request with wrong credentials claimed (for the audit line)."""
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    credentials = basic_credentials(value) if scheme.lower() == "basic" else None
    if credentials is not None:
        return credentials[0] or "?"
    return "?" if header else "anonymous"


def guarded(handler: Handler, protocol: str, action: str, targets_of: TargetsOf) -> Handler:
    """``handler`` behind the write permission, with every attempt audited."""

    @functools.wraps(handler)
    async def run(request: Any, **params: Any) -> Any:
        started = time.perf_counter()
        try:
            targets = targets_of(request, params)
        except ApiError as exc:  # a target refused before anything else (allow-list, name)
            try:
                who = await request.app.ctx.access.identify(request) or ANONYMOUS
            except ApiError:
                who = Principal(_claimed_user(request), (), "rejected")
            record(request, who, protocol, action, WriteTarget("", "", dict(params)),
                   "refused", started, _status(request, exc), _reason(exc))
            raise
        principal = await authorize(request, protocol, action, targets, started)
        request.ctx.principal = principal
        request.ctx.write_targets = targets
        request.ctx.write_notes = []
        try:
            response = await handler(request, **params)
        except ApiError as exc:
            noted = {id(n.target) for n in request.ctx.write_notes}
            _flush(request, principal, protocol, action, started, 200)
            for target in targets:
                if id(target) not in noted:
                    # A failure after the value went out (a put not confirmed, a read-back that
                    # failed) carries what was there and what was sent.
                    record(request, principal, protocol, action, target, _result(exc),
                           started, _status(request, exc), _reason(exc),
                           before=getattr(exc, "before", None), sent=getattr(exc, "sent", None))
            raise
        except Exception as exc:
            _flush(request, principal, protocol, action, started, 500)
            for target in targets:
                record(request, principal, protocol, action, target, "failed", started, 500,
                       f"{type(exc).__name__}: {exc}")
            raise
        _flush(request, principal, protocol, action, started, getattr(response, "status", None))
        return response

    return run


def _flush(request: Any, principal: Principal, protocol: str, action: str, started: float,
           status: int | None) -> None:
    for item in request.ctx.write_notes:
        if item.error is None:
            record(request, principal, protocol, action, item.target, "ok", started, status,
                   before=item.before, sent=item.sent, after=item.after)
        else:
            record(request, principal, protocol, action, item.target, _result(item.error),
                   started, _status(request, item.error), _reason(item.error),
                   before=item.before, sent=item.sent)
    request.ctx.write_notes = []


async def audited_write(request: Any, protocol: str, action: str, target: WriteTarget,
                        run: Callable[[], Awaitable[Any]]) -> Any:
    """One write outside an HTTP route (a pvws ``write`` message): the same permission check
    and audit line. ``run`` does the write and answers an object with ``before``, ``sent`` and
    ``after``."""
    started = time.perf_counter()
    principal = await authorize(request, protocol, action, [target], started)
    try:
        outcome = await run()
    except ApiError as exc:
        record(request, principal, protocol, action, target, _result(exc), started,
               _status(request, exc), _reason(exc), before=getattr(exc, "before", None),
               sent=getattr(exc, "sent", None))
        raise
    record(request, principal, protocol, action, target, "ok", started, 200,
           before=outcome.before, sent=outcome.sent, after=outcome.after)
    return outcome


# Always open: the probes of a load balancer or Kubernetes carry no credentials.
OPEN_PATHS = frozenset({"/health/live", "/health/ready"})


async def check_read(request: Any) -> None:
    """The request middleware's part: a read needs a user when ``read_access: authenticated``.
    Write routes are checked by ``guarded``; CORS preflights (OPTIONS) and the health probes
    (``OPEN_PATHS``) are never checked."""
    access: Access | None = getattr(request.app.ctx, "access", None)
    if access is None or not access.checks_reads:
        return  # auth: none: every read is anonymous, nothing to check (most requests)
    route = request.route
    if route is None or request.method == "OPTIONS" or request.path in OPEN_PATHS:
        return
    if request.method in getattr(route.ctx, "writes", ()):
        return
    request.ctx.principal = await access.check(request, READ)
