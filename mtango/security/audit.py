"""The audit trail: one JSON line per write attempt, accepted, refused or failed.

Like the CA gateway's put log, with the identity of the web user, which pvws and the Java server
lose. Each line::

    {"time": "2026-12-01T16:04:56.123Z", "user": "alice", "auth": "basic",
     "address": "10.0.0.7", "protocol": "rc3", "action": "attribute",
     "target": {"host": "db:10000", "device": "sys/tg_test/1", "attribute": "double_scalar_w"},
     "before": 1.5, "sent": 3.5, "after": 3.5, "result": "ok", "status": 200,
     "reason": null, "duration_ms": 4.2}

``result`` is ``ok``, ``refused`` (by the bridge's rules: no credentials, wrong ones, no right,
writes off; nothing was sent) or ``failed`` (the device or IOC refused or did not answer, or the
value could not be converted; ``reason`` says which). Values longer than ``MAX_VALUE_CHARS`` in
JSON are cut (a 1000x1000 image is not copied into the log).

``audit_log`` names a file: each line is appended with one ``write`` to a file opened with
``O_APPEND``, so the workers of a bridge (and several bridges on one file system) append whole
lines that never interleave, and a line is on disk (in the OS) as soon as the attempt ends.
Empty: the lines go to the standard error stream, written the same way (one ``write`` each),
whatever the logging configuration of the worker (a container's log collector keeps them).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any

from mtango import jsonenc

MAX_VALUE_CHARS = 4096
STDERR = 2


def _bounded(value: Any) -> Any:
    """``value`` as it goes into a line: itself when short, else its JSON cut, with its size."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = jsonenc.dumps(value)
    if len(text) <= MAX_VALUE_CHARS:
        return value
    return {"truncated": text[:MAX_VALUE_CHARS], "json_chars": len(text)}


class AuditLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._own = bool(path)
        self._fd: int | None = (os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                                if path else STDERR)

    def record(self, *, user: str, auth: str, address: str, protocol: str, action: str,
               target: dict[str, Any], result: str, started: float, status: int | None = None,
               reason: str | None = None, before: Any = None, sent: Any = None,
               after: Any = None) -> dict[str, Any]:
        """Write one line; returns it as a dict. ``started``: ``time.perf_counter()`` at the
        start of the attempt."""
        now = datetime.now(timezone.utc)
        entry = {
            "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "user": user,
            "auth": auth,
            "address": address,
            "protocol": protocol,
            "action": action,
            "target": target,
            "before": _bounded(before),
            "sent": _bounded(sent),
            "after": _bounded(after),
            "result": result,
            "status": status,
            "reason": reason,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if self._fd is not None:
            os.write(self._fd, (jsonenc.dumps(entry) + "\n").encode("utf-8"))
        return entry

    def close(self) -> None:
        if self._fd is not None and self._own:
            os.close(self._fd)
        self._fd = None
