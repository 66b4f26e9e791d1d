"""``/live/stream``: one SSE stream for Tango attributes and EPICS PVs together.

Against the demo device server (``pushed_counter`` changes every 100 ms) and the caproto IOCs
(``cp:counter`` changes every second; ``rs:`` is an IOC of its own that tests stop and start).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from mtango.config import Config
from mtango.demo import DEMO_DEVICE
from tests.bridge import InProcessBridge, http, poll
from tests.conftest import EPICS_TIMEOUT_MS, TEST_TIMEOUT_MS
from tests.sse import SseStream


@pytest.fixture(scope="module")
def both(control_system, caproto_ioc, restart_ioc) -> Iterator[InProcessBridge]:
    running = InProcessBridge(Config(
        tango_host=control_system.tango_host, tango_timeout_ms=TEST_TIMEOUT_MS,
        epics_ca_addr_list=(caproto_ioc.address, restart_ioc.address),
        epics_connect_timeout_ms=EPICS_TIMEOUT_MS, epics_read_timeout_ms=EPICS_TIMEOUT_MS,
        events_linger_s=1.0, sse_heartbeat_s=1.0,
    )).start()
    yield running
    running.stop()


def stream_url(bridge, tango: list[str] = (), pvs: list[str] = ()) -> str:
    query = [f"tango={quote(t)}" for t in tango] + [f"pv={quote(p)}" for p in pvs]
    return f"{bridge.base}/live/stream?{'&'.join(query)}"


def data(stream: SseStream) -> list[dict]:
    return [json.loads(m.data) for m in stream.snapshot()]


def of(stream: SseStream, target: str) -> list[dict]:
    return [d for d in data(stream) if d["target"] == target]


def tango_target(control_system, attribute: str) -> str:
    return f"{control_system.tango_host}/{DEMO_DEVICE}/{attribute}"


def test_one_stream_carries_tango_and_pv_values(both, control_system) -> None:
    counter = tango_target(control_system, "pushed_counter")
    url = stream_url(both, [counter], ["cp:counter", "cp:enum", "cp:double"])
    with SseStream(url) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.retry == 3000 or poll("retry", lambda: stream.retry == 3000)
        poll("two values of each counter", lambda: len(of(stream, counter)) >= 2
             and len(of(stream, "cp:counter")) >= 2 and of(stream, "cp:enum")
             and of(stream, "cp:double"))
        first, second = of(stream, counter)[:2]
        assert first["kind"] == "tango" and first["first"] and first["connected"]
        assert first["value"]["name"] == "pushed_counter"
        assert second["first"] is False
        assert second["value"]["value"] > first["value"]["value"]
        pv_first, pv_next = of(stream, "cp:counter")[:2]
        assert pv_first["kind"] == "pv" and pv_first["first"] and pv_first["connected"]
        assert pv_first["value"]["units"] == "s" and pv_first["value"]["access"] == "READ_WRITE"
        assert pv_next["first"] is False and "units" not in pv_next["value"]
        assert pv_next["value"]["value"] > pv_first["value"]["value"]
        enum = of(stream, "cp:enum")[0]["value"]
        assert (enum["value"], enum["text"], enum["enum_strings"]) == (1, "On",
                                                                       ["Off", "On", "Fault"])
        double = of(stream, "cp:double")[0]["value"]
        assert double["value"] == 1.234 and double["alarm"] == {"low": -9.0, "high": 9.0}
        # Ids are the hub's running numbers: increasing along the stream.
        ids = [int(m.id.rsplit("-", 1)[1]) for m in stream.snapshot()[4:]]
        assert ids == sorted(ids)


def upstream_events(bridge, attribute: str) -> int:
    body = bridge.get("/tango/rest/sys/subscriptions").json()
    return sum(u["events"] for u in body["upstreams"] if u["target"].get("attribute") ==
               attribute)


def test_last_event_id_resumes_with_what_changed(both, control_system) -> None:
    counter = tango_target(control_system, "pushed_counter")
    url = stream_url(both, [counter], ["cp:enum", "cp:counter"])
    # Another stream holds the upstreams meanwhile: left alone past the linger (1 s here, soon
    # over on a loaded machine) they would go, and the enum's new upstream would send it anew.
    with SseStream(url) as keeper:
        poll("the keeper's values", lambda: of(keeper, counter) and of(keeper, "cp:enum"))
        with SseStream(url) as stream:
            poll("values", lambda: len(of(stream, counter)) >= 3 and of(stream, "cp:enum"))
            last = stream.snapshot()[-1].id
            seen = of(stream, counter)[-1]["value"]["value"]
        events = upstream_events(both, "pushed_counter")
        poll("the counter changed since",
             lambda: upstream_events(both, "pushed_counter") > events)
        # Reconnecting as EventSource does: the counter changed since, the enum did not.
        with SseStream(url, headers={"Last-Event-ID": last}) as again:
            poll("the counter at once", lambda: of(again, counter))
            resumed = of(again, counter)[0]
            assert resumed["first"] is True and resumed["value"]["value"] > seen
            poll("a counter value", lambda: of(again, "cp:counter"))
            assert not of(again, "cp:enum"), "the client has the enum's value already"
    # An id of another worker (or an earlier process): everything the worker holds, at once.
    with SseStream(url, headers={"Last-Event-ID": "feedbeef-99"}) as other:
        poll("every target", lambda: of(other, counter) and of(other, "cp:enum"))


def test_disconnection_and_never_connected_are_explicit(both, restart_ioc) -> None:
    with SseStream(stream_url(both, pvs=["rs:counter", "nobody:here"])) as stream:
        poll("a value", lambda: of(stream, "rs:counter"))
        never = poll("never connected", lambda: of(stream, "nobody:here"))[0]
        assert never["connected"] is False and never["first"] is True
        assert never["error"]["errors"][0]["reason"] == "EPICS_CONNECT_TIMEOUT"
        restart_ioc.stop()
        try:
            lost = poll("a disconnection", lambda: [d for d in of(stream, "rs:counter")
                                                    if not d["connected"]])[0]
            assert lost["error"]["errors"][0]["reason"] == "EPICS_DISCONNECTED"
            assert lost["error"]["connected"] is False
            count = len(of(stream, "rs:counter"))
        finally:
            restart_ioc.start()
        back = poll("values again on the same stream", lambda: [
            d for d in of(stream, "rs:counter")[count:] if d["connected"]], timeout=60)[0]
        assert back["first"] is True and back["value"]["units"] == "s"


def test_bad_targets_are_refused_before_streaming(both, control_system) -> None:
    host = control_system.tango_host
    cases = [
        (f"{both.base}/live/stream", 400, "MissingParameter"),
        (stream_url(both, ["nonsense"]), 400, "BadTarget"),
        (stream_url(both, [f"{host}/sys/tg_test/pushed_counter"]), 400, "BadTarget"),
        (stream_url(both, ["elsewhere.example:10000/a/b/c/d"]), 403, None),
        (stream_url(both, pvs=["bad name"]), 400, None),
        (stream_url(both, [tango_target(control_system, "pushed_counter")]) + "&type=bogus",
         400, "UnsupportedEvent"),
    ]
    for url, status, reason in cases:
        reply = http("GET", url)
        assert reply.status == status, (url, reply.body)
        body = reply.json()
        assert body["quality"] == "FAILURE"
        if reason:
            assert body["errors"][0]["reason"] == reason, body


def test_streams_share_the_upstreams(both, control_system) -> None:
    counter = tango_target(control_system, "pushed_counter")
    url = stream_url(both, [counter], ["cp:counter"])
    with SseStream(url) as one, SseStream(url) as two:
        poll("values on both", lambda: of(one, "cp:counter") and of(two, "cp:counter"))
        body = both.get("/tango/rest/sys/subscriptions").json()
        pv = [u for u in body["upstreams"] if u["target"] == {"system": "epics",
                                                              "pv": "cp:counter"}]
        assert len(pv) == 1 and pv[0]["listeners"] == 2 and pv[0]["mode"] == "monitor"
        tango = [u for u in body["upstreams"] if u["target"].get("attribute") ==
                 "pushed_counter"]
        assert len(tango) == 1 and tango[0]["listeners"] == 2
        assert {c.get("stream") for c in body["streams"]} == {"live"}
