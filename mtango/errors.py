"""The error model: every failure becomes the same rc3 FAILURE body.

Routes and backends raise; they never build error responses themselves. ``ApiError`` carries what
the body needs (one or more ``ErrorEntry``) and the HTTP status. Tango's ``DevFailed`` is translated
by ``from_devfailed``, which also decides the *kind* of failure (unknown thing, unreachable, other)
so the status can follow the configured mode:

- ``rc3`` (default): Tango failures answer HTTP 200, like the Java mTango server; clients look at
  ``"quality": "FAILURE"``.
- ``rc4``: Tango failures answer 404 (unknown device/attribute/command/property), 503 (timeout,
  device or server down) or 400 (anything else), as the later API versions specify.

Errors that are not Tango's (bad parameter, unknown route, forbidden host) always carry their real
HTTP status, in both modes.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class ErrorEntry:
    reason: str
    description: str
    severity: str = "ERR"
    origin: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "reason": self.reason,
            "description": self.description,
            "severity": self.severity,
            "origin": self.origin,
        }


class FailureKind(Enum):
    """Why a Tango call failed, as far as the HTTP status is concerned."""

    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"


RC4_STATUS = {FailureKind.NOT_FOUND: 404, FailureKind.UNAVAILABLE: 503, FailureKind.FAILED: 400}


class ApiError(Exception):
    """A failure to be answered with the FAILURE body.

    ``status`` is the HTTP status for errors of the bridge itself; ``kind`` is set for failures
    reported by Tango (their status depends on the configured mode). ``headers`` go with the
    answer (a 401's ``WWW-Authenticate``).
    """

    def __init__(
        self,
        entries: list[ErrorEntry] | ErrorEntry,
        status: int = 400,
        kind: FailureKind | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.entries = entries if isinstance(entries, list) else [entries]
        self.status = status
        self.kind = kind
        self.headers = headers
        super().__init__(self.entries[0].description if self.entries else "error")

    def http_status(self, mode: str) -> int:
        if self.kind is None:
            return self.status
        return 200 if mode == "rc3" else RC4_STATUS[self.kind]


def bad_request(description: str, reason: str = "BadRequest", origin: str = "") -> ApiError:
    return ApiError(ErrorEntry(reason, description, "ERR", origin), status=400)


def not_found(description: str, reason: str = "NotFound", origin: str = "") -> ApiError:
    return ApiError(ErrorEntry(reason, description, "ERR", origin), status=404)


def forbidden(description: str, reason: str = "Forbidden", origin: str = "") -> ApiError:
    return ApiError(ErrorEntry(reason, description, "ERR", origin), status=403)


def now_ms() -> int:
    return int(time.time() * 1000)


def failure_body(entries: list[ErrorEntry], **extra: Any) -> dict[str, Any]:
    """The rc3 FAILURE body (``extra`` adds fields such as ``name`` for items of a list)."""
    body: dict[str, Any] = dict(extra)
    body.update(
        errors=[e.as_dict() for e in entries], quality="FAILURE", timestamp=now_ms()
    )
    return body


# Tango error reasons that mean "no such thing" and "cannot reach it now". Reasons are Tango's
# stable identifiers (see the Tango C++ API error list); descriptions are free text.
_NOT_FOUND_REASONS = frozenset(
    {
        "DB_DeviceNotDefined",
        "API_DeviceNotDefined",
        "API_AttrNotFound",
        "API_AttributeNotFound",
        "API_CommandNotFound",
        "API_PropertyNotFound",
        "API_ClassNotFound",
        "API_PipeNotFound",
    }
)
_UNAVAILABLE_REASONS = frozenset(
    {
        "API_DeviceTimedOut",
        "API_CantConnectToDevice",
        "API_DeviceNotExported",
        "API_ServerNotRunning",
        "API_CantConnectToDatabase",
        "API_DatabaseAccess",
        "API_CorbaException",
        "API_CommunicationFailed",
        "API_ConnectionFailed",
        "API_DeviceNotRunning",
    }
)


def classify_reasons(reasons: list[str]) -> FailureKind:
    if any(r in _NOT_FOUND_REASONS for r in reasons):
        return FailureKind.NOT_FOUND
    if any(r in _UNAVAILABLE_REASONS or "TIMEOUT" in r.upper() for r in reasons):
        return FailureKind.UNAVAILABLE
    return FailureKind.FAILED


def entries_from_devfailed(exc: Any) -> list[ErrorEntry]:
    return [
        ErrorEntry(
            reason=str(err.reason),
            description=str(err.desc).strip(),
            severity=_severity_name(err.severity),
            origin=str(err.origin).strip(),
        )
        for err in exc.args
    ]


def from_devfailed(exc: Any) -> ApiError:
    """Translate a PyTango ``DevFailed`` (duck-typed, so this module does not import tango)."""
    entries = entries_from_devfailed(exc)
    return ApiError(entries, kind=classify_reasons([e.reason for e in entries]))


def from_unexpected(exc: BaseException) -> ApiError:
    """A bug or an unforeseen library error: 500, described the way the Java server does."""
    frames = traceback.extract_tb(exc.__traceback__)
    origin = f"{frames[-1].filename}:{frames[-1].lineno} {frames[-1].name}" if frames else ""
    entries: list[ErrorEntry] = []
    current: BaseException | None = exc
    while current is not None and len(entries) < 5:
        entries.append(ErrorEntry(type(current).__name__, str(current), "ERR", origin))
        current = current.__cause__
    return ApiError(entries, status=500)


def _severity_name(severity: Any) -> str:
    name = getattr(severity, "name", None) or str(severity)
    return name.rsplit(".", 1)[-1]
