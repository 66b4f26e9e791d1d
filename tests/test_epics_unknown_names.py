"""Unknown PV names cost the bridge nothing once given up, and only so many may be searched at once.

Before: every distinct unknown name left its caproto PV (events, locks, callbacks, in reference
cycles) in the heap for good, since the worker's large young-GC threshold made full collections
rare; RSS grew about 5 MB per 1000 names. And nothing bounded how many names were searched for.
"""

from __future__ import annotations

from mtango.config import Config
from tests.bridge import InProcessBridge, poll
from tests.test_epics_batch import post


def test_given_up_names_release_their_state(caproto_ioc) -> None:
    """Unknown names are searched for without caproto PV objects (7 KB each), and once given up
    nothing of them is left: no channel, no search, nothing in caproto's caches."""
    bridge = InProcessBridge(Config(
        epics_ca_addr_list=(caproto_ioc.address,), epics_connect_timeout_ms=300,
        epics_read_timeout_ms=300, epics_dead_timeout=0.5,
    )).start()
    pool = bridge.app.ctx.epics.pool
    try:
        known = caproto_ioc.pv("double")
        # Connected and monitored first: connecting it within the 300 ms timeout while 500
        # unknown names are searched for was a race on a loaded machine.
        poll("the known name monitored", lambda: (r := bridge.get(
            f"/epics/rest/v1/pvs/{known}/value")).status == 200 and r.json().get("cached"))
        searched = 0
        for round_ in range(4):
            names = [f"nobody:has:{round_}:{i}" for i in range(500)]
            status, items = post(bridge, "/pvs/value", [known, *names])
            assert status == 200
            assert "value" in items[0], items[0]
            assert {i["errors"][0]["reason"] for i in items[1:]} == {"EPICS_CONNECT_TIMEOUT"}
            waiting = [pool.channels[n] for n in names if n in pool.channels]
            searched += len(waiting)
            assert all(c.pv is None for c in waiting)
            del items
        assert searched > 1000
        context = pool.context
        assert set(context.pvs) == {(known, 0)}  # the answered name only
        poll("channels given up", lambda: set(pool.channels) <= {known})
        assert not context.pvs_needing_circuits
        assert not context.broadcaster.unanswered_searches
        # Known names still work after all of that.
        reply = bridge.get(f"/epics/rest/v1/pvs/{known}/value")
        assert reply.status == 200, reply.body
    finally:
        bridge.stop()


def test_names_beyond_the_search_bound_are_refused(caproto_ioc) -> None:
    bridge = InProcessBridge(Config(
        epics_ca_addr_list=(caproto_ioc.address,), epics_connect_timeout_ms=300,
        epics_read_timeout_ms=300, epics_max_searching=100,
    )).start()
    try:
        names = [f"nobody:bound:{i}" for i in range(150)]
        status, items = post(bridge, "/pvs/value", names)
        assert status == 200
        reasons = [i["errors"][0]["reason"] for i in items]
        assert reasons.count("EPICS_CONNECT_TIMEOUT") == 100, reasons
        assert reasons.count("EPICS_TOO_MANY_SEARCHES") == 50, reasons
        assert {i["name"] for i in items} == set(names)
        # The 100 are still searched for: one more unknown name is refused at once ...
        reply = bridge.get("/epics/rest/v1/pvs/nobody:bound:extra/value")
        assert reply.status == 503
        assert reply.json()["errors"][0]["reason"] == "EPICS_TOO_MANY_SEARCHES"
        assert "nobody:bound:extra" not in bridge.app.ctx.epics.pool.channels
        # ... while names that have channels already are served as ever.
        reply = bridge.get(f"/epics/rest/v1/pvs/{caproto_ioc.pv('double')}/value")
        assert reply.status == 503  # a new name too, while the bound is reached
        status, again = post(bridge, "/pvs/value", names[:100])
        assert [i["errors"][0]["reason"] for i in again] == ["EPICS_CONNECT_TIMEOUT"] * 100
    finally:
        bridge.stop()
