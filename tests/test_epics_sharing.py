"""Channel sharing, as a CA gateway does: one channel and one monitor per PV whatever the number
of HTTP readers, reads served from the monitor while young enough, concurrent network reads
shared, idle channels released and reopened. Checked through the health counters."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mtango.config import Config
from tests.bridge import InProcessBridge, poll
from tests.conftest import EPICS_TIMEOUT_MS

V1 = "/epics/rest/v1"




def make_bridge(*iocs, **settings) -> InProcessBridge:
    config = Config(
        epics_ca_addr_list=tuple(i.address for i in iocs),
        epics_connect_timeout_ms=EPICS_TIMEOUT_MS,
        epics_read_timeout_ms=EPICS_TIMEOUT_MS,
        **settings,
    )
    return InProcessBridge(config).start()


@pytest.fixture(scope="module")
def bridge(caproto_ioc, soft_ioc) -> InProcessBridge:
    """A bridge of its own, so its counters see only this module's reads."""
    running = make_bridge(caproto_ioc, soft_ioc)
    yield running
    running.stop()


def health(bridge: InProcessBridge) -> dict[str, Any]:
    return bridge.get(f"{V1}/health").json()


def read_together(bridge: InProcessBridge, path: str, readers: int) -> list[dict[str, Any]]:
    """``readers`` HTTP clients asking at the same moment."""
    barrier = threading.Barrier(readers)
    replies: list[Any] = [None] * readers

    def one(i: int) -> None:
        barrier.wait()
        replies[i] = bridge.get(V1 + path)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(r is not None and r.status == 200 for r in replies)
    return [r.json() for r in replies]


def reads(bridge: InProcessBridge) -> dict[str, int]:
    return health(bridge)["reads"]


def test_many_readers_one_channel_one_subscription(bridge):
    before = health(bridge)
    bodies = read_together(bridge, "/pvs/sf:longin/value", 40)
    assert {b["value"] for b in bodies} == {12345}
    after = poll("the monitor", lambda: (h := health(bridge))["subscriptions"]
                 > before["subscriptions"] and h)
    assert after["channels"]["total"] == before["channels"]["total"] + 1
    assert after["subscriptions"] == before["subscriptions"] + 1
    delta = {k: after["reads"][k] - before["reads"][k] for k in ("cache", "upstream", "shared")}
    assert sum(delta.values()) == 40
    assert delta["shared"] > 0 and delta["upstream"] < 40  # the readers shared network reads
    # From now on the monitor answers them all, still on one channel and one subscription.
    poll("served from the monitor",
         lambda: bridge.get(f"{V1}/pvs/sf:longin/value").json()["cached"])
    start = reads(bridge)
    read_together(bridge, "/pvs/sf:longin/value", 40)
    end = health(bridge)
    assert end["reads"]["cache"] - start["cache"] == 40
    assert end["reads"]["upstream"] == start["upstream"]
    assert end["channels"]["total"] == after["channels"]["total"]
    assert end["subscriptions"] == after["subscriptions"]


def test_max_age_and_fresh(bridge):
    path = "/pvs/cp:float/value"
    bridge.get(V1 + path)
    poll("served from the monitor", lambda: bridge.get(f"{V1}{path}").json()["cached"])
    start = reads(bridge)
    body = bridge.get(f"{V1}{path}?max_age=600000").json()
    assert body["cached"] is True and body["value"] == 2.5
    assert reads(bridge)["upstream"] == start["upstream"]
    body = bridge.get(f"{V1}{path}?fresh=1").json()
    assert body["cached"] is False and body["age_ms"] < 60000
    assert reads(bridge)["upstream"] == start["upstream"] + 1
    body = bridge.get(f"{V1}{path}?max_age=0").json()
    assert body["cached"] is False
    assert reads(bridge)["upstream"] == start["upstream"] + 2


def test_concurrent_fresh_reads_share_one_network_read(bridge):
    bridge.get(f"{V1}/pvs/sf:ao/value")
    shared = 0
    # Sharing needs the 20 requests to overlap, which the scheduler decides: a few rounds, with
    # every read accounted for in each, until one shows it (almost always the first).
    for _ in range(10):
        start = reads(bridge)
        bodies = read_together(bridge, "/pvs/sf:ao/value?fresh=1", 20)
        assert all(b["value"] == 1.5 for b in bodies)
        end = reads(bridge)
        assert end["upstream"] - start["upstream"] + end["shared"] - start["shared"] == 20
        shared = end["shared"] - start["shared"]
        if shared:
            break
    assert shared > 0


def test_monitored_values_follow_changes(bridge):
    """A counter read with a long max_age still changes: the monitor keeps the value current."""
    path = f"{V1}/pvs/cp:counter/value?max_age=600000"
    first = bridge.get(path).json()
    changed = poll("a new counter value", lambda: (b := bridge.get(path).json())["value"]
                   != first["value"] and b)
    assert changed["cached"] is True and changed["value"] > first["value"]


def test_idle_channels_are_released_and_reopened(caproto_ioc):
    running = make_bridge(caproto_ioc, epics_idle_timeout=0.5, epics_dead_timeout=0.5)
    short = f"{V1}/pvs/cp:short/value"

    def monitored_while_in_use() -> bool:  # reading it keeps it from going idle
        return running.get(short).json()["value"] == -7 and health(running)["subscriptions"] == 1

    try:
        poll("the monitor", monitored_while_in_use)
        assert running.get(f"{V1}/pvs/cp:gone/value").status == 504
        released = poll("idle channels released", lambda: (h := health(running))["channels"][
            "total"] == 0 and h)
        assert released["subscriptions"] == 0
        assert released["reads"]["released_channels"] == 2
        context = running.app.ctx.epics.pool.context
        assert ("cp:gone", 0) not in context.pvs  # an unknown name is forgotten entirely
        assert all(s[0] != "cp:gone" for s in context.broadcaster.unanswered_searches.values())
        # Asked for again, the released channel is opened again and monitored again.
        assert running.get(f"{V1}/pvs/cp:short/value").json()["value"] == -7
        assert running.get(f"{V1}/pvs/cp:short").json()["units"] == ""
        poll("the monitor again", monitored_while_in_use)
        assert running.get(f"{V1}/pvs/cp:gone/value").status == 504
    finally:
        running.stop()
