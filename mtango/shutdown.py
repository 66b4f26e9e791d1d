"""Stopping as Kubernetes (and docker, systemd) stops a server: readiness first, then streams.

On SIGTERM ``main.py`` leaves a ``stopping`` file in the server's run directory, where every
worker's ``/health/ready`` sees it (503, ``ShuttingDown``), and serves on for ``shutdown_drain_s``
seconds while load balancers let go of the replica. Then the workers stop: each open client gets
a last word that tells it to come back (to another replica, or to this one restarted), and the
process exits. No HTTP in here: the words, and the marker.
"""

from __future__ import annotations

import json
from pathlib import Path

STOPPING_FILE = "stopping"
# What EventSource waits before it reconnects after the final event (ms): soon, since another
# replica serves by then.
RECONNECT_MS = 1000
# WebSocket close code 1012, "Service Restart" (IANA registry): the client may reconnect.
WS_SERVICE_RESTART = 1012
WS_REASON = "service restart"
REASON = "the server is stopping; reconnect"

# The last message of every Server-Sent Events stream: a named event, so that handlers of values
# (``onmessage``, an mTango client's listeners of its event ids) never take it for one; no ``id``,
# so that the client's Last-Event-ID stays the id of the last value it got.
SSE_RECONNECT = (f"event: reconnect\nretry: {RECONNECT_MS}\n"
                 f"data: {json.dumps({'reason': REASON, 'retry_ms': RECONNECT_MS})}\n\n")


def mark_stopping(run_dir: Path) -> None:
    """Tell every worker of the server that it is stopping (their readiness fails from now)."""
    try:
        (run_dir / STOPPING_FILE).touch()
    except OSError:
        pass  # the run directory is gone: the server is stopping anyway


def is_stopping(run_dir: Path | None) -> bool:
    return run_dir is not None and (run_dir / STOPPING_FILE).exists()
