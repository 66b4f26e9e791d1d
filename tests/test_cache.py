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


def test_inline_flight_shares_one_call_and_its_failure() -> None:
    async def scenario() -> tuple[list[object], int, int]:
        flight = SingleFlight(detached=False)
        calls = 0

        async def work() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            if calls == 2:
                raise ValueError("second")
            return 3

        first = await asyncio.gather(*(flight.run("k", work) for _ in range(5)))
        second = await asyncio.gather(*(flight.run("k", work) for _ in range(3)),
                                      return_exceptions=True)
        return [*first, *(type(r).__name__ for r in second)], flight.executed, flight.shared

    results, executed, shared = asyncio.run(scenario())
    assert results == [3] * 5 + ["ValueError"] * 3
    assert (executed, shared) == (2, 6)


def test_inline_flight_runs_again_when_its_first_caller_goes_away() -> None:
    """The first caller runs the call itself: cancelled, the others run it anew and get their
    answer; a waiting caller cancelled leaves the others alone."""
    async def scenario() -> tuple[int, int, int, bool]:
        flight = SingleFlight(detached=False)
        # The work ends when the test says, not after a sleep: a loop held up 15 ms on a loaded
        # machine let a 20 ms sleep end before the cancel, and first was no longer cancelled.
        release = asyncio.Event()

        async def work() -> int:
            await release.wait()
            return 3

        first = asyncio.ensure_future(flight.run("k", work))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(flight.run("k", work))
        third = asyncio.ensure_future(flight.run("k", work))
        await asyncio.sleep(0)  # second and third join the first's call
        first.cancel()
        third.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(asyncio.CancelledError):
            await third
        release.set()
        return await second, flight.executed, flight.shared, flight.running("k")

    assert asyncio.run(scenario()) == (3, 2, 2, False)
