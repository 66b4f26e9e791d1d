"""A pvws WebSocket client for the tests: the ``websockets`` package, one asyncio loop per test."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import websockets


class PvwsSocket:
    """One socket; every message received is kept (parsed) in ``messages``."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = options
        self.messages: list[dict[str, Any]] = []
        self.ws: Any = None

    async def __aenter__(self) -> PvwsSocket:
        self.ws = await websockets.connect(self.url, open_timeout=30, **self.options)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.ws.close()

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def until(self, what: str, found: Callable[[list[dict[str, Any]]], Any],
                    timeout: float = 30.0) -> Any:
        """Read messages until ``found(messages)`` is true; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            result = found(self.messages)
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not within {timeout} s; got {self.messages[-5:]}")
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                continue
            self.messages.append(json.loads(raw))

    def updates(self, pv: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "update" and m.get("pv") == pv]
