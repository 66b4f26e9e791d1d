"""The one way from a foreign thread to the event loop.

Tango delivers events on its own threads, caproto its monitor updates and read replies on its
own; both reach the loop through a ``Handoff``. Jobs queue under a lock and the loop is woken
once for however many are waiting: a burst of 1000 monitor updates costs one
``call_soon_threadsafe`` (one write to the loop's self-pipe) instead of 1000.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("mtango")


class Handoff:
    """Run jobs posted from any thread on ``loop``, in the order they were posted."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._wake_pending = False

    def post(self, job: Callable[..., Any], *args: Any) -> None:
        """Run ``job(*args)`` on the loop soon; callable from any thread, never blocks long."""
        with self._lock:
            self._jobs.append((job, args))
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop has closed: the worker is stopping
            pass

    def _drain(self) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, []
            self._wake_pending = False
        for job, args in jobs:
            try:
                job(*args)
            except Exception:
                log.exception("job %r handed to the event loop failed", job)
