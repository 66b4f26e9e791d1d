"""The watchdog of a pool's caproto context: threads that died, and what to do about it.

Some of caproto's threads end on an exception they do not catch, and the context then silently
stops working for good: its search thread dies when an IOC accepts the TCP connection but does not
answer within 2 s (every later PV stays unconnected), its subscription thread when a channel drops
while a monitor is being set up (measured with ``tests/test_epics_failures.py``'s hung IOC and IOC
restarts). The pool checks once a second (``Watchdog.check``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from mtango.epics import compat

if TYPE_CHECKING:
    from mtango.epics.pool import ChannelPool

log = logging.getLogger("mtango.epics")


class Watchdog:
    """Notices dead caproto threads of one pool and repairs or replaces its context."""

    def __init__(self, pool: ChannelPool) -> None:
        self.pool = pool
        self._last_reset = self._next_reset = 0.0
        self._reset_pause = 1.0

    def dead_threads(self) -> list[str]:
        """The names of the context's caproto threads that have stopped."""
        context = self.pool.context
        if context is None:
            return []
        threads = compat.context_threads(context)
        return [t.name for t in threads if t is not None and not t.is_alive()]

    def check(self) -> bool:
        """Replace the caproto context when one of its threads died (with a growing pause
        between replacements, so an IOC that keeps killing it cannot make the bridge flap).

        The subscription thread alone is simply started again: it dies when a channel drops
        while its monitor is being set up, which an IOC restart can cause; the monitors it was
        setting up are asked for again. Returns whether the context was replaced.
        """
        dead = self.dead_threads()
        context = self.pool.context
        if dead == ["activate_subscriptions"] and context is not None:
            log.warning("caproto's subscription thread stopped; starting it again")
            compat.restart_subscription_thread(context)
            self.pool.restart_monitors()
            return False
        now = time.monotonic()
        if not dead or now < self._next_reset:
            return False
        self._reset_pause = min(60.0, self._reset_pause * 2) if now - self._last_reset < 60 else 1.0
        self._last_reset, self._next_reset = now, now + self._reset_pause
        self.pool.reset_context(f"caproto thread(s) {', '.join(dead)} stopped")
        return True
