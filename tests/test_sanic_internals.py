"""Sanic names the bridge relies on beyond Sanic's public API, checked on the installed Sanic.

pyproject admits Sanic 24.12 to 25.x; a release that renames one of these fails here, with the
name, rather than at a worker's start or a pod's stop. Each name is used, with its measured
reason, in the module named beside it. (What pvws's ``send_texts`` uses of Sanic's WebSocket
object is checked by tests/test_pvws.py.)
"""

from __future__ import annotations

import inspect

import pytest
from sanic.response import HTTPResponse
from sanic.response.types import BaseHTTPResponse
from sanic.worker.manager import WorkerManager

# main.py: signals held while the worker manager talks to its shared state; the SIGTERM drain.
MANAGER_METHODS = ("wait_for_ack", "_sync_states", "_cleanup_non_tracked_workers",
                   "shutdown_signal", "_poll_monitor")


@pytest.mark.parametrize("name", MANAGER_METHODS)
def test_worker_manager_methods(name: str) -> None:
    assert callable(getattr(WorkerManager, name, None)), f"WorkerManager.{name} is gone"


def test_worker_manager_knows_when_it_is_shutting_down() -> None:
    """``_shutting_down`` is set in the manager's constructor (main.py reads it)."""
    assert "_shutting_down" in inspect.getsource(WorkerManager.__init__)


def test_header_sanitiser() -> None:
    """mtango/app.py replaces ``_sanitize_header_value`` with a faster one of the same meaning."""
    assert callable(getattr(BaseHTTPResponse, "_sanitize_header_value", None))
    response = HTTPResponse(headers={"x-a": "b\r\nc"})
    assert dict(response.processed_headers)[b"x-a"] == b"bc"

