"""Live Tango values: rc3 long polling, mTango subscriptions over SSE, reads from events.

Against the real demo device server: ``polled_counter`` has change events from Tango's polling,
``pushed_counter`` change events pushed by the device's own thread, ``long_scalar_w`` no events
at all (the bridge polls it), ``sys/alarm/1/alarm_scalar`` is reported with ATTR_ALARM. Devices
that tests write to or stop are served by servers of this module alone.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
import tango

from mtango.config import Config
from mtango.demo import ALARM_DEVICE, DEMO_DEVICE
from tests.bridge import InProcessBridge, http, poll
from tests.conftest import TEST_TIMEOUT_MS
from tests.sse import SseStream

LIVE_SERVER = "DemoTangoTest/live"
LIVE_DEVICE = "test/live/1"
POLL_MS = 200
QUEUE = 16
IDLE_S = 3.0  # heartbeats every second (a third of it)


@pytest.fixture(scope="module")
def live_device(control_system) -> Iterator[str]:
    control_system.add_server(LIVE_SERVER, {"DemoTangoTest": [LIVE_DEVICE]})
    yield LIVE_DEVICE
    control_system.stop_server(LIVE_SERVER)
    control_system.database().delete_server(LIVE_SERVER)


@pytest.fixture(scope="module")
def live(control_system) -> Iterator[InProcessBridge]:
    """A bridge with a short poll period, linger and queue, so tests see them act quickly."""
    running = InProcessBridge(Config(
        tango_host=control_system.tango_host, tango_timeout_ms=TEST_TIMEOUT_MS,
        tango_poll_ms=POLL_MS, events_linger_s=1.0, events_queue_size=QUEUE,
        subscription_idle_s=IDLE_S,
    )).start()
    yield running
    running.stop()


def attr_path(host_path: str, device: str, attribute: str) -> str:
    return f"{host_path}/devices/{device}/attributes/{attribute}"


def subscribe(bridge, targets: list[dict]) -> dict:
    reply = http("POST", f"{bridge.base}/tango/subscriptions", body=targets)
    assert reply.status == 200, reply.body
    return reply.json()


def upstreams_of(bridge, device: str, attribute: str) -> list[dict]:
    body = bridge.get("/tango/rest/sys/subscriptions").json()
    return [u for u in body["upstreams"]
            if u["target"]["device"] == device and u["target"]["attribute"] == attribute]


# -- long polling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["polled_counter", "pushed_counter"])
def test_long_poll_initial_then_continuation(live, host_path, attribute):
    url = attr_path(host_path, DEMO_DEVICE, attribute) + "/change"
    first = live.get(url + "?state=INITIAL&timeout=10000")
    assert first.status == 200
    initial = first.json()
    assert initial["name"] == attribute and initial["quality"] == "ATTR_VALID"
    assert isinstance(initial["value"], int)
    assert initial["_links"]["_parent"].endswith(f"/attributes/{attribute}")
    following = live.get(url + "?state=CONTINUATION&timeout=10000").json()
    assert following["name"] == attribute
    assert following["timestamp"] > initial["timestamp"]
    assert following["value"] > initial["value"]
    later = live.get(url + "?timeout=10000").json()  # no state: also the next event
    assert later["timestamp"] > following["timestamp"]


def test_long_poll_timeout_answers_the_latest_value_in_rc3(live, host_path):
    url = attr_path(host_path, DEMO_DEVICE, "short_scalar_ro") + "/change"
    initial = live.get(url + "?state=INITIAL").json()
    assert initial["value"] == -12
    reply = live.get(url + "?state=CONTINUATION&timeout=300")
    assert reply.status == 200
    assert reply.json()["value"] == -12 and reply.json()["quality"] == "ATTR_VALID"


def test_long_poll_timeout_is_503_in_rc4(bridge_rc4, host_path):
    url = attr_path(host_path, DEMO_DEVICE, "short_scalar_ro") + "/change"
    assert bridge_rc4.get(url + "?state=INITIAL").status == 200
    reply = bridge_rc4.get(url + "?timeout=300")
    assert reply.status == 503
    body = reply.json()
    assert body["quality"] == "FAILURE"
    assert body["errors"][0]["reason"] == "API_EventTimeout"


def test_long_poll_last_answers_the_buffered_events(live, host_path):
    url = attr_path(host_path, DEMO_DEVICE, "pushed_counter") + "/change"
    since = live.get(url + "?state=INITIAL").json()["timestamp"]
    # Keep the upstream listened to while events gather in its buffer.
    with SseStream(live.base + "/tango/subscriptions/"
                   f"{subscribe(live, [target_of(live, 'pushed_counter')])['id']}/event-stream"):
        events = poll("three buffered events", lambda: (
            lambda got: got if len(got) >= 3 else None)(
                live.get(f"{url}?last={since}").json()))
    assert all(e["timestamp"] > since for e in events)
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    values = [e["value"] for e in events]
    assert values == sorted(values) and len(set(values)) == len(values)


def target_of(bridge, attribute: str, device: str = DEMO_DEVICE, kind: str = "change") -> dict:
    """A subscription target of the bridge's own Tango database."""
    return {"host": bridge.config.tango_host, "device": device, "attribute": attribute,
            "type": kind}


def test_long_poll_refuses_what_it_cannot_serve(live, host_path, control_system):
    base = attr_path(host_path, DEMO_DEVICE, "pushed_counter")
    unknown_event = live.get(base + "/sometimes")
    assert unknown_event.status == 400
    assert unknown_event.json()["errors"][0]["reason"] == "UnsupportedEvent"
    assert "Unsupported event: sometimes" in unknown_event.json()["errors"][0]["description"]
    unknown_attr = live.get(attr_path(host_path, DEMO_DEVICE, "no_such_attr") + "/change"
                            "?timeout=5000")
    assert unknown_attr.json()["quality"] == "FAILURE"
    assert unknown_attr.json()["errors"][0]["reason"] == "API_AttrNotFound"
    elsewhere = live.get(f"/tango/rest/rc3/hosts/elsewhere/10000/devices/{DEMO_DEVICE}"
                         "/attributes/pushed_counter/change?state=INITIAL")
    assert elsewhere.status == 403
    assert not [u for u in live.get("/tango/rest/sys/subscriptions").json()["upstreams"]
                if u["target"]["host"].startswith("elsewhere")]


def test_event_quality_is_the_real_one(live, host_path):
    url = attr_path(host_path, ALARM_DEVICE, "alarm_scalar") + "/change"
    initial = live.get(url + "?state=INITIAL&timeout=10000").json()
    assert initial["quality"] == "ATTR_ALARM"
    following = live.get(url + "?timeout=10000").json()
    assert following["quality"] == "ATTR_ALARM"


# -- the bridge's own polling, for attributes without events ---------------------------------------


def test_an_attribute_without_events_is_polled(live, host_path, control_system, live_device):
    proxy = tango.DeviceProxy(control_system.trl(live_device))
    proxy.write_attribute("long_scalar_w", 100)
    url = attr_path(host_path, live_device, "long_scalar_w") + "/change"
    assert live.get(url + "?state=INITIAL").json()["value"] == 100
    sub = subscribe(live, [target_of(live, "long_scalar_w", live_device)])
    with SseStream(f"{live.base}/tango/subscriptions/{sub['id']}/event-stream") as stream:
        poll("the current value first", lambda: stream.of("1"))
        assert json.loads(stream.of("1")[0].data) == 100
        [upstream] = upstreams_of(live, live_device, "long_scalar_w")
        assert upstream["mode"] == "poll"
        # Long enough to be still waiting at the write on a loaded machine (at its timeout rc3
        # answers the old value); it answers as soon as the bridge's poll sees the new one.
        waiting = _in_thread(lambda: live.get(url + "?timeout=15000").json())
        poll("the long poll waiting", lambda: upstreams_of(live, live_device,
                                                           "long_scalar_w")[0]["listeners"] == 2)
        proxy.write_attribute("long_scalar_w", 101)
        assert waiting.result(30)["value"] == 101
        poll("the written value on the stream",
             lambda: [m for m in stream.of("1") if json.loads(m.data) == 101])


def _in_thread(fn):
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return future


# -- mTango subscriptions --------------------------------------------------------------------------


def test_subscription_answers_and_failures(live, control_system):
    good = target_of(live, "pushed_counter")
    bad_attr = target_of(live, "no_such_attr")
    bad_host = {**good, "host": "elsewhere:10000"}
    bad_type = {**good, "type": "sometimes"}
    sub = subscribe(live, [good, bad_attr, bad_host, bad_type, "junk"])
    assert [e["target"] for e in sub["events"]] == [good]  # echoed exactly as sent
    assert sub["events"][0]["id"] == 1
    reasons = [f["errors"][0]["reason"] for f in sub["failures"]]
    assert reasons == ["API_AttrNotFound", "TangoHostNotAllowed", "UnsupportedEvent",
                       "BadTarget"]
    assert http("GET", f"{live.base}/tango/subscriptions/{sub['id']}").json() == sub
    assert http("GET", f"{live.base}/tango/subscriptions/123").status == 404
    assert http("POST", f"{live.base}/tango/subscriptions", body=b"{").status == 400
    empty = subscribe(live, [])
    assert empty["events"] == [] and empty["id"] != sub["id"]
    gone = http("DELETE", f"{live.base}/tango/subscriptions/{empty['id']}")
    assert gone.status == 204
    assert http("GET", f"{live.base}/tango/subscriptions/{empty['id']}").status == 404


def test_stream_starts_with_latest_values_and_has_retry(live):
    sub = subscribe(live, [target_of(live, "pushed_counter"), target_of(live, "short_scalar_ro")])
    url = f"{live.base}/tango/subscriptions/{sub['id']}/event-stream"
    with SseStream(url) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        poll("a value of each event", lambda: stream.of("1") and stream.of("2"))
        assert stream.retry == 3000
        assert json.loads(stream.of("2")[0].data) == -12
        assert int(stream.of("2")[0].id) > 0  # the event's time in ms
    # A second stream of the same subscription gets the latest values at once, even the one
    # that never changes.
    with SseStream(url) as again:
        poll("the unchanging value again", lambda: again.of("2"))


def test_an_idle_subscription_is_removed_an_open_one_kept(live):
    sub = subscribe(live, [target_of(live, "short_scalar_ro")])
    url = f"{live.base}/tango/subscriptions/{sub['id']}"
    with SseStream(url + "/event-stream") as stream:
        # Streamed for longer than the idle time: kept, heartbeat after heartbeat.
        poll("heartbeats for longer than the idle time",
             lambda: len(stream.of("maintenance")) > IDLE_S + 1, timeout=30)
        assert http("GET", url).status == 200
    poll("the subscription removed once its stream is closed",
         lambda: http("GET", url).status == 404, timeout=30)


def test_waltz_sequence_across_workers(control_system, tmp_path):
    """POST, stream, PUT, DELETE with a body, DELETE: on different workers of one server."""
    from tests.bridge import MainProcess, child_env

    main = MainProcess(["--workers", "2"], child_env(TANGO_HOST=control_system.tango_host),
                       tmp_path / "main.log")
    try:
        main.wait_ready()
        poll("both workers ready (the banner)", lambda: "serving Tango" in main.log.read_text())
        base = f"{main.base}/tango/subscriptions"
        first = {"host": control_system.tango_host, "device": DEMO_DEVICE,
                 "attribute": "pushed_counter", "type": "change"}
        created = http("POST", base, body=[first])
        sub = created.json()
        post_worker = created.headers["x-mtango-worker"]
        stream = _on_another_worker(lambda: SseStream(f"{base}/{sub['id']}/event-stream"),
                                    post_worker, close=SseStream.close)
        stream_worker = stream.headers["x-mtango-worker"]
        with stream:
            poll("events of the first target", lambda: len(stream.of("1")) >= 2)
            second = {**first, "attribute": "polled_counter"}
            # PUT the same target again and again: the first adds it, the others find it.
            put = _on_another_worker(
                lambda: http("PUT", f"{base}/{sub['id']}", body=[second]), stream_worker)
            [added] = put.json()
            assert added["target"] == second and added["id"] == 2
            poll("events of the added target on the same stream",
                 lambda: len(stream.of("2")) >= 2, timeout=30)
            removed = http("DELETE", f"{base}/{sub['id']}", body=[1])
            assert [e["id"] for e in removed.json()["events"]] == [2]
            assert [e["id"] for e in http("GET", f"{base}/{sub['id']}").json()["events"]] == [2]
            poll("event 1 no longer sent", lambda: _stopped(stream, "1", "2"), timeout=30)
            assert http("DELETE", f"{base}/{sub['id']}").status == 204
            poll("the stream ended", lambda: stream.ended, timeout=10)
            assert http("GET", f"{base}/{sub['id']}").status == 404
        # A stopping server ends its open streams itself (Sanic's graceful shutdown waited for
        # them, then stopped the loop under them: a traceback in the log).
        last = http("POST", base, body=[first]).json()
        with SseStream(f"{base}/{last['id']}/event-stream") as open_stream:
            poll("values", lambda: open_stream.of("1"))
            assert main.stop() == 0
            poll("the open stream ended by the server", lambda: open_stream.ended)
        assert "Traceback" not in main.log.read_text()
    finally:
        main.stop()


def _on_another_worker(request, worker: str, close=None):
    """Make ``request()`` until a worker other than ``worker`` answers it.

    The workers share one listening socket; on an idle server the same one tends to win every
    accept, so requests are made eight at a time, which the workers race for."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        def attempt():
            answers = list(pool.map(lambda _: request(), range(8)))
            other = [a for a in answers if a.headers.get("x-mtango-worker") != worker]
            for answer in answers:
                if close is not None and (not other or answer is not other[0]):
                    close(answer)
            return other[0] if other else None

        return poll(f"a request answered by a worker other than {worker}", attempt)


def _stopped(stream: SseStream, gone: str, kept: str) -> bool:
    """Two events of ``kept`` arrived after the last one of ``gone``."""
    messages = stream.snapshot()
    last_gone = max((i for i, m in enumerate(messages) if m.event == gone), default=-1)
    return sum(1 for m in messages[last_gone + 1:] if m.event == kept) >= 2


def test_fifty_streams_share_one_upstream_that_goes_after_the_linger(live):
    subs = [subscribe(live, [target_of(live, "polled_counter")]) for _ in range(50)]
    streams = [SseStream(f"{live.base}/tango/subscriptions/{s['id']}/event-stream")
               for s in subs]
    try:
        poll("every stream has values", lambda: all(len(s.of("1")) >= 2 for s in streams))
        [upstream] = upstreams_of(live, DEMO_DEVICE, "polled_counter")
        assert upstream["listeners"] >= 50
        assert upstream["mode"] == "change"
    finally:
        for stream in streams:
            stream.close()
    poll("the upstream dropped after the linger",
         lambda: not upstreams_of(live, DEMO_DEVICE, "polled_counter"))


# -- slow clients ----------------------------------------------------------------------------------


def test_a_client_that_never_reads_delays_nobody(live):
    sub = subscribe(live, [target_of(live, "pushed_spectrum")])
    url = f"{live.base}/tango/subscriptions/{sub['id']}/event-stream"
    stalled = socket.create_connection(("127.0.0.1", live.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(f"GET /tango/subscriptions/{sub['id']}/event-stream HTTP/1.1\r\n"
                    f"Host: 127.0.0.1\r\n\r\n".encode())
    readers = [SseStream(url) for _ in range(10)]
    try:
        def stalled_client() -> dict | None:
            clients = live.get("/tango/rest/sys/subscriptions").json()["streams"]
            full = [c for c in clients if c["coalesced"] > 0]
            return full[0] if full else None

        first = poll("the stalled client's queue full and coalescing", stalled_client,
                     timeout=60)
        assert first["queued"] <= QUEUE + first["targets"]
        later = poll("its coalesced count growing", lambda: (
            lambda c: c if c and c["coalesced"] > first["coalesced"] else None)(
                stalled_client()))
        assert later["queued"] <= QUEUE + later["targets"]
        # The readers got every event: consecutive counter values, no gap.
        for reader in readers:
            counters = [int(json.loads(m.data)[0]) for m in reader.of("1") if not m.error]
            assert len(counters) > 10
            assert counters == list(range(counters[0], counters[0] + len(counters))), counters
    finally:
        stalled.close()
        for reader in readers:
            reader.close()


# -- reads from events -----------------------------------------------------------------------------


def _tango_calls(bridge) -> int:
    return bridge.get("/tango/rest/sys/stats").json()["upstream"]["calls"].get("tango", 0)


def test_reads_from_events_make_no_device_call(live, host_path):
    sub = subscribe(live, [target_of(live, "polled_counter")])
    url = attr_path(host_path, DEMO_DEVICE, "polled_counter") + "/value"
    with SseStream(f"{live.base}/tango/subscriptions/{sub['id']}/event-stream") as stream:
        poll("events on the stream", lambda: len(stream.of("1")) >= 2)
        # Earlier tests' upstreams that poll devices are gone after their linger (1 s here).
        poll("no other upstream", lambda: [u["target"]["attribute"] for u in live.get(
            "/tango/rest/sys/subscriptions").json()["upstreams"]] == ["polled_counter"])
        before = _tango_calls(live)
        answers = [live.get(url + "?max_age=60000") for _ in range(200)]
        assert _tango_calls(live) == before
        assert all(a.headers.get("x-mtango-from-events") == "polled_counter" for a in answers)
        # The stream may be a message behind the bridge's latest event (its reader is a thread
        # of this process): wait until it has every event the reads answered.
        stamps = {a.json()["timestamp"] for a in answers}
        streamed = poll("the answered events on the stream", lambda: (
            lambda got: got if stamps <= set(got) else None)(
                {int(m.id): json.loads(m.data) for m in stream.of("1")}))
        for answer in answers:
            body = answer.json()
            assert streamed.get(body["timestamp"]) == body["value"]
        several = live.get(f"{host_path}/devices/{DEMO_DEVICE}/attributes/value"
                           "?attr=polled_counter&attr=short_scalar_ro&max_age=60000")
        assert several.headers["x-mtango-from-events"] == "polled_counter"
        assert [v["value"] for v in several.json()][1] == -12
        assert _tango_calls(live) == before + 1  # short_scalar_ro only
        fresh = live.get(url + "?max_age=60000&fresh=1")
        assert "x-mtango-from-events" not in fresh.headers
        assert _tango_calls(live) == before + 2
        plain = live.get(url)  # tango_max_age_ms is 0: the device, as rc3 does
        assert "x-mtango-from-events" not in plain.headers


# -- failures are events ---------------------------------------------------------------------------

STOP_SERVER = "DemoTangoTest/livestop"
STOP_DEVICE = "test/livestop/1"


def test_a_stopped_server_is_an_error_event_and_values_resume(live, host_path, control_system):
    control_system.add_server(STOP_SERVER, {"DemoTangoTest": [STOP_DEVICE]})
    try:
        sub = subscribe(live, [target_of(live, "pushed_counter", STOP_DEVICE)])
        url = attr_path(host_path, STOP_DEVICE, "pushed_counter") + "/change"
        with SseStream(f"{live.base}/tango/subscriptions/{sub['id']}/event-stream") as stream:
            poll("values", lambda: len(stream.of("1")) >= 3)
            assert not [m for m in stream.of("1") if m.error]
            control_system.stop_server(STOP_SERVER)

            def long_polls() -> dict:
                """Long polls until one is not a value (an event sent before the stop may
                still answer the first)."""
                for _ in range(5):
                    answer = live.get(url + "?timeout=30000", timeout=40).json()
                    if "value" not in answer:
                        return answer
                return answer

            waiting = _in_thread(long_polls)
            # Tango notices a dead event channel at its keep-alive check (every 10 s, the
            # server's heartbeat being 9 s): up to about 20 s.
            errors = poll("an error event on the stream",
                          lambda: [m for m in stream.of("1") if m.error], timeout=45)
            assert errors[0].data.startswith("error: API_EventTimeout: ")
            failure = waiting.result(45)
            assert failure["quality"] == "FAILURE"
            assert failure["errors"][0]["reason"] == "API_EventTimeout"
            [upstream] = upstreams_of(live, STOP_DEVICE, "pushed_counter")
            assert not upstream["healthy"]
            assert upstream["last_error"]["errors"][0]["reason"] == "API_EventTimeout"
            count = len(stream.snapshot())
            control_system.restart_server(STOP_SERVER)
            poll("values again on the same stream", lambda: [
                m for m in stream.snapshot()[count:] if m.event == "1" and not m.error],
                timeout=45)
            assert poll("healthy again", lambda: upstreams_of(
                live, STOP_DEVICE, "pushed_counter")[0]["healthy"])
    finally:
        control_system.stop_server(STOP_SERVER)
        control_system.database().delete_server(STOP_SERVER)
