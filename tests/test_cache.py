"""Caches and single-flight: bounded, counted, one build per key under concurrency."""

from __future__ import annotations

import asyncio

import pytest

from mtango.cache import AsyncLRUCache, SingleFlight


def test_lru_counts_and_evicts() -> None:
    async def scenario() -> dict:
        cache: AsyncLRUCache[str] = AsyncLRUCache("t", maxsize=2)

        async def make(v: str) -> str:
            return v

        await cache.get("a", lambda: make("A"))
        await cache.get("b", lambda: make("B"))
        assert await cache.get("a", lambda: make("other")) == "A"  # hit, a is now newest
        await cache.get("c", lambda: make("C"))  # evicts b
        await cache.get("b", lambda: make("B2"))
        return cache.info()

    assert asyncio.run(scenario()) == {"hits": 1, "misses": 4, "currsize": 2, "maxsize": 2}


def test_concurrent_misses_build_once() -> None:
    async def scenario() -> tuple[int, dict, list[int]]:
        cache: AsyncLRUCache[int] = AsyncLRUCache("t", maxsize=8)
        builds = 0

        async def build() -> int:
            nonlocal builds
            builds += 1
            await asyncio.sleep(0.05)
            return 7

        values = await asyncio.gather(*(cache.get("k", build) for _ in range(10)))
        return builds, cache.info(), values

    builds, info, values = asyncio.run(scenario())
    assert builds == 1
    assert values == [7] * 10
    assert info["misses"] == 1 and info["hits"] == 9


def test_failed_build_is_not_cached_and_reaches_every_waiter() -> None:
    async def scenario() -> int:
        cache: AsyncLRUCache[int] = AsyncLRUCache("t", maxsize=8)

        async def broken() -> int:
            await asyncio.sleep(0.01)
            raise RuntimeError("no")

        results = await asyncio.gather(*(cache.get("k", broken) for _ in range(3)),
                                       return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        return len(cache)

    assert asyncio.run(scenario()) == 0


def test_single_flight_survives_a_cancelled_caller() -> None:
    async def scenario() -> tuple[int, int, int]:
        flight = SingleFlight()

        async def work() -> int:
            await asyncio.sleep(0.05)
            return 3

        first = asyncio.ensure_future(flight.run("k", work))
        second = asyncio.ensure_future(flight.run("k", work))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second, flight.executed, flight.shared

    assert asyncio.run(scenario()) == (3, 1, 1)
