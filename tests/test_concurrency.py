"""A slow device does not hold up the others; identical work is done once.

``test/slow/1`` (SlowDevice) takes 3 s to read ``slow_scalar``. The checks are about ordering, not
wall-clock limits: fast reads of another device, started while slow reads are in flight, must all
complete before any of the slow ones does. Durations are measured and shown in failure messages.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from mtango.config import Config, normalize_tango_host
from mtango.demo import DEMO_DEVICE
from tests.bridge import InProcessBridge, Reply, poll
from tests.conftest import SLOW_DEVICE

# A server of this module only: an overloaded slow device keeps its server busy long after the
# clients gave up, and a fresh dserver device is certainly in no proxy cache yet.
CROWD_SERVER = "DemoTangoTest/crowd"
CROWD_DEVICE = "test/crowd/1"
CROWD_DSERVER = f"dserver/{CROWD_SERVER}"


@dataclass
class Timed:
    reply: Reply
    started: float
    finished: float

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def timed_get(bridge: InProcessBridge, path: str) -> Timed:
    started = time.monotonic()
    reply = bridge.get(path, timeout=60)
    return Timed(reply, started, time.monotonic())




def host_key(control_system) -> str:
    return normalize_tango_host(control_system.tango_host)


@pytest.fixture(scope="module")
def crowd(control_system) -> Iterator[str]:
    control_system.add_server(CROWD_SERVER, {"SlowDevice": [CROWD_DEVICE]})
    yield CROWD_DEVICE
    control_system.stop_server(CROWD_SERVER)
    control_system.database().delete_server(CROWD_SERVER)


def fast_reads_during(
    bridge: InProcessBridge, slow: list[Future], fast_path: str, count: int = 5
) -> list[Timed]:
    """Read ``fast_path`` ``count`` times in a row while the ``slow`` requests are in flight."""
    fast = []
    for _ in range(count):
        fast.append(timed_get(bridge, fast_path))
        assert not any(f.done() for f in slow), (
            f"a slow request returned before fast read #{len(fast)} "
            f"(fast reads took {[round(t.seconds, 3) for t in fast]} s)"
        )
    return fast


def check_fast(fast: list[Timed], slow: list[Timed]) -> None:
    first_slow_end = min(s.finished for s in slow)
    durations = [round(t.seconds, 3) for t in fast]
    for timed in fast:
        assert timed.reply.status == 200, timed.reply.body
        assert timed.reply.json()["value"] == 42, timed.reply.body
        assert timed.finished < first_slow_end, (durations, [round(s.seconds, 3) for s in slow])


def test_slow_device_does_not_block_others(bridge, control_system, host_path):
    slow_path = f"{host_path}/devices/{SLOW_DEVICE}/attributes/slow_scalar/value"
    fast_path = f"{host_path}/devices/{DEMO_DEVICE}/attributes/long_scalar/value"
    key = (host_key(control_system), SLOW_DEVICE, "slow_scalar")
    assert bridge.get(fast_path).status == 200  # proxy of the fast device in the cache

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(timed_get, bridge, slow_path)
        poll("the slow read", lambda: bridge.tango.reads.running(key) or slow.done(), 10, 0.005)
        fast = fast_reads_during(bridge, [slow], fast_path)
        slow_result = slow.result(60)

    check_fast(fast, [slow_result])
    assert slow_result.reply.status == 200, slow_result.reply.body
    assert slow_result.reply.headers.get("x-mtango")


def test_overloaded_device_does_not_starve_the_pool(control_system, crowd, host_path):
    """8 concurrent distinct slow reads of one device with a pool of 5 threads.

    The per-device limit (4) leaves a thread for the fast device; without it the slow reads would
    hold all 5 threads and the fast reads would wait for them.
    """
    config = Config(
        tango_host=control_system.tango_host,
        tango_threads=5,
        tango_calls_per_device=4,
        tango_timeout_ms=2000,
    )
    combos = [
        ["slow_scalar"],
        ["slow_scalar", "fast_scalar"],
        ["fast_scalar", "slow_scalar"],
        ["slow_scalar", "State"],
        ["State", "slow_scalar"],
        ["slow_scalar", "Status"],
        ["Status", "slow_scalar"],
        ["slow_scalar", "fast_scalar", "State"],
    ]
    assert len(combos) > config.tango_calls_per_device and len(combos) > config.tango_threads
    device = f"{host_path}/devices/{crowd}/attributes/value?"
    slow_paths = [device + "&".join(f"attr={a}" for a in combo) for combo in combos]
    fast_path = f"{host_path}/devices/{DEMO_DEVICE}/attributes/long_scalar/value"
    keys = [(host_key(control_system), crowd, tuple(a.lower() for a in c)) for c in combos]

    bridge = InProcessBridge(config).start()
    try:
        assert bridge.get(fast_path).status == 200
        assert bridge.get(f"{host_path}/devices/{crowd}/state").json()["state"] == "ON"
        with ThreadPoolExecutor(len(slow_paths)) as pool:
            slow = [pool.submit(timed_get, bridge, p) for p in slow_paths]
            poll(
                "all slow reads in flight",
                lambda: all(bridge.tango.reads.running(k) for k in keys) or any(
                    f.done() for f in slow),
                10,
                0.005,
            )
            fast = fast_reads_during(bridge, slow, fast_path)
            slow_results = [f.result(60) for f in slow]
        check_fast(fast, slow_results)
        for result in slow_results:  # each answered (a value array, or a timeout FAILURE)
            assert result.reply.status == 200, result.reply.body
            assert result.reply.json()
    finally:
        bridge.stop()


def test_identical_concurrent_reads_share_one_call(bridge, control_system, host_path):
    path = f"{host_path}/devices/{SLOW_DEVICE}/attributes/slow_scalar/value"
    key = (host_key(control_system), SLOW_DEVICE, "slow_scalar")
    reads = bridge.tango.reads
    count = 20
    executed, shared = reads.executed, reads.shared
    barrier = threading.Barrier(count)

    def read(_: int) -> Reply:
        barrier.wait(10)
        return bridge.get(path, timeout=60)

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(read, i) for i in range(count)]
        poll("the read", lambda: reads.running(key) or any(f.done() for f in futures), 10, 0.005)
        replies = [f.result(60) for f in futures]

    assert [r.status for r in replies] == [200] * count
    assert reads.executed - executed == 1
    assert reads.shared - shared == count - 1
    bodies = {r.body for r in replies}
    assert len(bodies) == 1, bodies  # one device read: the very same value and timestamp
    assert replies[0].json()["value"] == 1.0


def test_concurrent_first_requests_build_one_proxy(bridge, crowd, host_path):
    """Concurrent first requests for an uncached device build its proxy once."""
    devices = bridge.tango.devices
    path = f"{host_path}/devices/{CROWD_DSERVER}/state"
    count = 12
    before = devices.info()
    barrier = threading.Barrier(count)

    def read(_: int) -> Reply:
        barrier.wait(10)
        return bridge.get(path)

    with ThreadPoolExecutor(count) as pool:
        replies = list(pool.map(read, range(count)))

    assert [r.status for r in replies] == [200] * count
    assert {r.json()["state"] for r in replies} == {"ON"}
    after = devices.info()
    assert after["misses"] - before["misses"] == 1
    assert after["hits"] - before["hits"] == count - 1
    assert after["currsize"] == before["currsize"] + 1


def test_concurrent_proxy_lookups_on_the_loop_build_once(bridge, control_system, crowd):
    """The same, deterministic: all lookups start before the first build can finish."""
    tango = bridge.tango
    host = host_key(control_system)
    count = 20
    before = tango.devices.info()

    async def lookups() -> list:
        return await asyncio.gather(*(tango.proxy(host, crowd) for _ in range(count)))

    proxies = bridge.run(lookups())
    assert len({id(p) for p in proxies}) == 1
    after = tango.devices.info()
    assert after["misses"] - before["misses"] == 1
    assert after["hits"] - before["hits"] == count - 1
