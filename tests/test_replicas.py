"""Replicas behind a real load balancer: nginx, configured as the README recommends
(``deploy/nginx/mtango.conf``, run as it is), in front of three ``main.py`` processes on one
demo stack (README, "Several replicas behind a load balancer").

- Reads spread over the replicas, and the answers are the same whichever serves them.
- A replica killed (SIGKILL, its whole process group, as a node dies) during a read load: no
  read fails or hangs (nginx tries another replica), the others stay ready.
- A rolling restart (SIGTERM one replica at a time, started again on its port): SSE streams
  (``/live/stream``, an mTango subscription) and a pvws WebSocket reconnect and carry on with the
  latest values; of the writes sent meanwhile, every acknowledged one was applied exactly once,
  none twice, and the last acknowledged one is the value left.
- A write that meets a replica just gone is answered 502 and applied nowhere: nginx does not
  send it on to another replica (it would, a PUT, without the write location).
- mTango subscriptions created, extended and streamed through the load balancer stay on the
  replica that holds them (the ``/tango/subscriptions`` location hashes on the client address).

Which replica answered: nginx's ``$upstream_addr`` in an ``X-Upstream`` header that the test's
nginx.conf adds around the recommended configuration (tests/nginx.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import WebSocketException

from mtango.demo import DEMO_DEVICE
from mtango.shutdown import WS_SERVICE_RESTART
from tests.bridge import ROOT, MainProcess, child_env, http, poll
from tests.nginx import CONFIG, UPSTREAM_HEADER, Nginx, ensure_nginx
from tests.sse import SseStream

REPLICAS = 3
WORKERS = "1"
PV = "cp:counter"  # the caproto IOC's counter: +1 every second
FIRST_WRITE = 7_000_001  # the writes' values: distinct, and unlike any other test's


@dataclass
class Replica:
    """One bridge process on a port of its own, started again on the same port when stopped."""

    index: int
    directory: Path
    env: dict[str, str]
    port: int = 0
    starts: int = 0
    main: MainProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.address}"

    @property
    def running(self) -> bool:
        return self.main is not None and self.main.process.poll() is None

    def launch(self) -> None:
        self.starts += 1
        self.main = MainProcess(["--workers", WORKERS], self.env,
                                self.directory / f"replica{self.index}-{self.starts}.log",
                                port=self.port or None)
        self.port = self.main.port

    def wait_ready(self) -> None:
        assert self.main is not None
        self.main.wait_ready()
        poll(f"replica {self.index} ready", lambda: http(
            "GET", f"{self.base}/health/ready", timeout=10).status == 200)

    def start(self) -> None:
        """Start (again, on the same port) and wait until ready. A port the previous process
        still held a moment ago may refuse the first bind: then once more."""
        for attempt in range(3):
            self.launch()
            try:
                self.wait_ready()
                return
            except RuntimeError:
                assert self.main is not None
                if attempt == 2 or "address already in use" not in \
                        self.main.log.read_text().lower():
                    raise

    def pid(self) -> int:
        assert self.main is not None
        return self.main.process.pid

    def stop(self) -> None:
        if self.main is not None:
            self.main.stop()


@dataclass
class Cluster:
    nginx: Nginx
    replicas: list[Replica]
    tango_host: str

    @property
    def device(self) -> str:
        return f"/tango/rest/rc3/hosts/{self.tango_host.replace(':', '/')}/devices/{DEMO_DEVICE}"

    def addresses(self) -> set[str]:
        return {r.address for r in self.replicas}

    def all_up(self) -> None:
        """Every replica running and ready, and nginx sending reads to each again (after a
        failure nginx leaves a replica out for fail_timeout, then tries it again)."""
        for replica in self.replicas:
            if not replica.running:
                replica.start()
        url = f"{self.nginx.base}{self.device}/attributes/double_spectrum_ro/value"

        def serving() -> bool:
            seen = {http("GET", url, timeout=10).headers.get(UPSTREAM_HEADER) for _ in range(6)}
            return seen == self.addresses()

        poll("nginx sends reads to every replica", serving)


@pytest.fixture(scope="module")
def nginx_path() -> str:
    path, why = ensure_nginx()
    if path is None:
        # Replicas behind a load balancer are a feature: untested, they must not pass.
        pytest.fail(f"nginx is not available: {why}")
    return path


@pytest.fixture(scope="module")
def cluster(nginx_path, control_system, caproto_ioc, tmp_path_factory) -> Cluster:
    directory = tmp_path_factory.mktemp("replicas")
    replicas = []
    for index in range(REPLICAS):
        env = child_env(TANGO_HOST=control_system.tango_host,
                        EPICS_CA_ADDR_LIST=caproto_ioc.address, MTANGO_WRITES="on",
                        MTANGO_AUDIT_LOG=str(directory / f"audit{index}.jsonl"))
        replicas.append(Replica(index, directory, env))
    nginx = None
    try:
        for replica in replicas:  # all three start at once
            replica.launch()
        for replica in replicas:
            replica.wait_ready()
        nginx = Nginx(nginx_path, directory / "nginx", [r.address for r in replicas])
        yield Cluster(nginx, replicas, control_system.tango_host)
    finally:
        if nginx is not None:
            nginx.stop()
        for replica in replicas:
            replica.stop()


def test_the_readme_describes_the_configuration_tested() -> None:
    """The README's words about nginx are the file's (which the tests below run)."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "deploy/nginx/mtango.conf" in readme
    text = " ".join(CONFIG.read_text().split())
    # (in the file, as the README says it)
    for words, said in [
        ("max_fails=1 fail_timeout=5s", "max_fails=1 fail_timeout=5s"),
        ("keepalive 32", "keepalive 32"),
        ("keepalive_timeout 10s", "keepalive_timeout 10s"),
        ("proxy_http_version 1.1", "proxy_http_version 1.1"),
        ('proxy_set_header Connection ""', 'Connection ""'),
        ("hash $remote_addr consistent", "hash $remote_addr consistent"),
        ("proxy_buffering off", "proxy_buffering off"),
        ("proxy_read_timeout 3600s", "proxy_read_timeout 3600s"),
        ("proxy_send_timeout 3600s", "proxy_send_timeout 3600s"),
        ("proxy_connect_timeout 5s", "(5 s, `proxy_connect_timeout`)"),
        ("client_max_body_size 6m", "client_max_body_size 6m"),
        ("proxy_set_header Host $http_host", "Host $http_host"),
        ("proxy_next_upstream error timeout", "proxy_next_upstream error timeout"),
        ("proxy_next_upstream_tries 3", "(tries 3, within 10 s)"),
        ("proxy_next_upstream_timeout 10s", "(tries 3, within 10 s)"),
        ("error_page 418 = @mtango_write", "error_page 418 = @mtango_write"),
        ("if ($request_method !~ ^(GET|HEAD|OPTIONS)$) { return 418; }",
         "if ($request_method !~ ^(GET|HEAD|OPTIONS)$) { return 418; }"),
        ("location @mtango_write { proxy_next_upstream off;", "proxy_next_upstream off"),
        ("location /tango/subscriptions { proxy_pass http://mtango_bridge_subscriptions;",
         "location /tango/subscriptions"),
        ("proxy_set_header Upgrade $http_upgrade", "`Upgrade`"),
    ]:
        assert words in text, words
        assert said in readme, said


def without_timestamps(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timestamps(v) for k, v in value.items() if k != "timestamp"}
    if isinstance(value, list):
        return [without_timestamps(v) for v in value]
    return value


# -- reads --------------------------------------------------------------------------------------


def test_reads_spread_over_the_replicas_with_the_same_answers(cluster: Cluster) -> None:
    cluster.all_up()
    paths = [f"{cluster.device}/attributes/double_spectrum_ro/value",
             f"{cluster.device}/attributes/double_spectrum_ro",
             f"{cluster.device}/attributes/double_spectrum_ro/info"]
    for path in paths:
        replies = [http("GET", cluster.nginx.base + path) for _ in range(60)]
        assert {r.status for r in replies} == {200}, path
        served = Counter(r.headers[UPSTREAM_HEADER] for r in replies)
        # Round robin: every replica, each about a third, none tried in vain.
        assert set(served) == cluster.addresses(), served
        assert min(served.values()) >= 10, served
        bodies = {json.dumps(without_timestamps(r.json()), sort_keys=True) for r in replies}
        assert len(bodies) == 1, f"{path}: {len(bodies)} different answers"
    value = http("GET", cluster.nginx.base + paths[0]).json()
    assert value["value"] == [1.25, 2.25, 3.25, 4.25]
    # Links name the address the client used (nginx passes its Host on), not a replica's.
    info = http("GET", cluster.nginx.base + paths[1]).json()
    assert info["_links"]["_self"].startswith(cluster.nginx.base), info["_links"]


# -- mTango subscriptions -----------------------------------------------------------------------


def target(cluster: Cluster, attribute: str) -> dict[str, str]:
    return {"host": cluster.tango_host, "device": DEMO_DEVICE, "attribute": attribute,
            "type": "change"}


def test_mtango_subscriptions_stay_on_their_replica(cluster: Cluster) -> None:
    cluster.all_up()
    base = f"{cluster.nginx.base}/tango/subscriptions"
    created = http("POST", base, body=[target(cluster, "pushed_counter")])
    assert created.status == 200, created
    home = created.headers[UPSTREAM_HEADER]
    assert home in cluster.addresses()
    sub = created.json()
    first_event = str(sub["events"][0]["id"])
    with SseStream(f"{base}/{sub['id']}/event-stream") as stream:
        assert stream.status == 200 and stream.headers[UPSTREAM_HEADER] == home
        poll("pushed_counter values", lambda: len(stream.of(first_event)) >= 3)
        extended = http("PUT", f"{base}/{sub['id']}", body=[target(cluster, "polled_counter")])
        assert extended.status == 200, extended
        assert extended.headers[UPSTREAM_HEADER] == home
        (added,) = extended.json()
        assert added["target"] == target(cluster, "polled_counter")
        # The stream, opened before, now brings the added target's values too.
        poll("polled_counter values", lambda: stream.of(str(added["id"])))
        shown = http("GET", f"{base}/{sub['id']}")
        assert shown.status == 200 and shown.headers[UPSTREAM_HEADER] == home
        assert [e["target"]["attribute"] for e in shown.json()["events"]] == [
            "pushed_counter", "polled_counter"]
        # Whatever the other replicas are asked about it: they do not know it.
        for replica in cluster.replicas:
            if replica.address != home:
                assert http("GET", f"{replica.base}/tango/subscriptions/{sub['id']}"
                            ).status == 404
        # More subscriptions of this client: all on the same replica.
        more = [http("POST", base, body=[target(cluster, "pushed_counter")]) for _ in range(6)]
        assert {r.headers[UPSTREAM_HEADER] for r in more} == {home}
        for reply in more:
            assert http("DELETE", f"{base}/{reply.json()['id']}").status == 204
        deleted = http("DELETE", f"{base}/{sub['id']}")
        assert deleted.status == 204 and deleted.headers[UPSTREAM_HEADER] == home
        poll("the stream ends with its subscription", lambda: stream.ended)
    assert http("GET", f"{base}/{sub['id']}").status == 404


# -- a replica killed ---------------------------------------------------------------------------


def fail_timeout_s() -> float:
    """The replicas' fail_timeout in deploy/nginx/mtango.conf."""
    (seconds,) = set(re.findall(r"fail_timeout=(\d+)s", CONFIG.read_text()))
    return float(seconds)


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | str  # the HTTP status, or the exception
    upstream: str


def test_a_killed_replica_fails_no_read(cluster: Cluster) -> None:
    cluster.all_up()
    victim, others = cluster.replicas[0], cluster.replicas[1:]
    url = f"{cluster.nginx.base}{cluster.device}/attributes/double_scalar/value"
    outcomes: list[Outcome] = []
    readiness: list[int | str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                reply = http("GET", url, timeout=10)
                status: int | str = reply.status
                upstream = reply.headers.get(UPSTREAM_HEADER, "")
            except Exception as error:  # a timeout too: a request that hung
                status, upstream = repr(error), ""
            outcomes.append(Outcome(started, time.monotonic(), status, upstream))
            stop.wait(0.02)  # pacing

    def watch_readiness() -> None:
        while not stop.is_set():
            for replica in others:
                try:
                    status: int | str = http("GET", f"{replica.base}/health/ready",
                                             timeout=10).status
                except OSError as error:
                    status = repr(error)
                readiness.append(status)
            stop.wait(0.05)

    threads = [threading.Thread(target=read) for _ in range(8)]
    threads.append(threading.Thread(target=watch_readiness))
    for thread in threads:
        thread.start()
    try:
        poll("the victim serves some of the load",
             lambda: sum(o.upstream == victim.address for o in list(outcomes)) >= 20)
        killed_at = time.monotonic()
        os.killpg(victim.pid(), signal.SIGKILL)  # the whole replica: main process and worker
        assert victim.main is not None
        victim.main.process.wait(10)

        def after_kill() -> list[Outcome]:
            return [o for o in list(outcomes) if o.started > killed_at]

        # nginx notices: a read sent to the victim goes on to another replica.
        poll("a read retried on another replica", lambda: [
            o for o in list(outcomes)
            if o.ended > killed_at and o.upstream.startswith(victim.address + ",")])
        # ... leaves it out for fail_timeout, then tries it again, and again goes on to another.
        poll("the victim tried again after fail_timeout", lambda: [
            o for o in after_kill() if o.upstream.startswith(victim.address + ",")
            and o.started > killed_at + fail_timeout_s()], timeout=30 + fail_timeout_s())
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not any(t.is_alive() for t in threads), "a request hung"
    after = [o for o in outcomes if o.started > killed_at]
    in_flight = [o for o in outcomes if o.started <= killed_at < o.ended]
    # Not one read sent after the kill failed: nginx tried the victim, then another replica.
    assert Counter(o.status for o in after) == {200: len(after)}, Counter(
        o.status for o in after)
    assert not [o for o in after if o.upstream.split(", ")[-1] == victim.address]
    # Those in flight when it died ended too (a read the victim had begun to answer cannot go
    # on to another replica; none did here so far, see the README).
    assert not [o for o in in_flight if "timed out" in str(o.status)]
    retried = [o for o in outcomes if "," in o.upstream]
    assert retried and all(victim.address in o.upstream for o in retried)
    assert readiness and set(readiness) == {200}, Counter(readiness)
    assert victim.address in cluster.nginx.error_log()
    span = max(o.ended for o in outcomes) - min(o.started for o in outcomes)
    print(f"\nkill: {len(outcomes)} reads in {span:.1f} s, {len(after)} after the kill, "
          f"{len(in_flight)} in flight at it, {len(retried)} retried on another replica, "
          f"statuses {Counter(o.status for o in outcomes)}, longest "
          f"{max(o.ended - o.started for o in outcomes) * 1000:.0f} ms; readiness "
          f"{Counter(readiness)}")
    cluster.all_up()  # the victim again


def test_a_write_is_never_sent_to_a_second_replica(cluster: Cluster) -> None:
    """nginx would send a PUT (idempotent for HTTP) on to another replica even after the first
    may have applied it; the write location forbids that: a write that meets a replica just gone
    is answered 502, and was applied nowhere."""
    cluster.all_up()
    victim = cluster.replicas[1]
    url = f"{cluster.nginx.base}{cluster.device}/attributes/long_scalar_w/value"
    os.killpg(victim.pid(), signal.SIGKILL)
    assert victim.main is not None
    victim.main.process.wait(10)
    try:
        # Round robin over three: one of three writes in a row is sent to the victim.
        replies = {value: http("PUT", f"{url}?v={value}") for value in range(5_000_001, 5_000_004)}
        failed = {v: r for v, r in replies.items() if r.status != 200}
        assert len(failed) == 1, {v: (r.status, r.headers.get(UPSTREAM_HEADER))
                                  for v, r in replies.items()}
        ((value, reply),) = failed.items()
        assert reply.status == 502 and reply.headers[UPSTREAM_HEADER] == victim.address
        assert all(r.headers[UPSTREAM_HEADER] != victim.address
                   for r in replies.values() if r.status == 200)
        sent = [e["sent"] for e in audited(cluster)]
        assert value not in sent
        assert all(sent.count(v) == 1 for v in replies if v != value)
    finally:
        cluster.all_up()


# -- a rolling restart --------------------------------------------------------------------------


@dataclass
class Value:
    connection: int
    target: str
    value: Any
    first: bool
    at: float


@dataclass
class Client:
    """What a reconnecting client saw: values, connections, how its connections ended."""

    values: list[Value] = field(default_factory=list)
    connections: int = 0
    endings: list[Any] = field(default_factory=list)  # reconnect events, close codes
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def of(self, target: str) -> list[Value]:
        return [v for v in list(self.values) if v.target == target]

    def latest_at(self, target: str) -> float:
        got = self.of(target)
        return got[-1].at if got else 0.0

    def run(self, body: Any) -> Client:
        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)


def follow(stream: SseStream, client: Client, on_message: Any) -> None:
    """Hand the stream's messages to ``on_message`` until it ends (or the client stops)."""
    seen = 0
    while True:
        messages = stream.snapshot()
        for message in messages[seen:]:
            if message.event == "reconnect":
                client.endings.append("reconnect")
            else:
                on_message(message)
        seen = len(messages)
        if stream.ended and len(stream.snapshot()) == seen:
            return
        if client.stop.wait(0.02):
            return


def live_stream_client(url: str) -> Client:
    """An EventSource on /live/stream: reconnects after ``retry`` with Last-Event-ID."""
    client = Client()
    last_id = [""]

    def body() -> None:
        retry = 1.0
        while not client.stop.is_set():
            headers = {"Last-Event-ID": last_id[0]} if last_id[0] else {}
            try:
                stream = SseStream(url, headers)
            except OSError as error:
                client.errors.append(repr(error))
                client.stop.wait(retry)
                continue
            if stream.status != 200:
                client.errors.append(f"{stream.status} {stream.body[:200]!r}")
                client.stop.wait(retry)
                continue
            client.connections += 1

            def on_message(message: Any, number: int = client.connections) -> None:
                data = json.loads(message.data)
                if message.id:
                    last_id[0] = message.id
                if data.get("connected"):
                    client.values.append(Value(number, data["target"], data["value"]["value"],
                                               data.get("first", False), time.monotonic()))

            try:
                follow(stream, client, on_message)
            finally:
                stream.close()
            retry = (stream.retry or 3000) / 1000
            client.stop.wait(retry)

    return client.run(body)


def mtango_client(base: str, targets: list[dict[str, str]]) -> Client:
    """What the waltz client does: POST the targets, stream; after any end or error of the
    stream, wait and POST again."""
    client = Client()

    def body() -> None:
        while not client.stop.is_set():
            try:
                created = http("POST", f"{base}/tango/subscriptions", body=targets, timeout=10)
                if created.status != 200:
                    raise OSError(f"POST {created.status}")
                sub = created.json()
                names = {str(e["id"]): e["target"]["attribute"] for e in sub["events"]}
                stream = SseStream(f"{base}/tango/subscriptions/{sub['id']}/event-stream")
            except OSError as error:
                client.errors.append(repr(error))
                client.stop.wait(1.0)
                continue
            if stream.status != 200:  # 404: the replica that answered the POST is gone
                client.errors.append(f"stream {stream.status}")
                client.stop.wait(1.0)
                continue
            client.connections += 1

            def on_message(message: Any, number: int = client.connections,
                           names: dict[str, str] = names) -> None:
                if message.event in names and not message.error:
                    client.values.append(Value(number, names[message.event],
                                               json.loads(message.data), False,
                                               time.monotonic()))

            try:
                follow(stream, client, on_message)
            finally:
                stream.close()
            client.stop.wait(1.0)  # waltz waits 3 s

    return client.run(body)


def pvws_client(url: str, pv: str) -> Client:
    """A pvws client: (re)connects, subscribes, and after a close connects again."""
    client = Client()

    async def main() -> None:
        while not client.stop.is_set():
            try:
                async with websockets.connect(url, open_timeout=10) as ws:
                    client.connections += 1
                    number = client.connections
                    await ws.send(json.dumps({"type": "subscribe", "pvs": [pv]}))
                    while not client.stop.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 0.2)
                        except asyncio.TimeoutError:
                            continue
                        message = json.loads(raw)
                        if message.get("type") == "update" and isinstance(
                                message.get("value"), (int, float)):
                            client.values.append(Value(number, message["pv"], message["value"],
                                                       "vtype" in message, time.monotonic()))
            except websockets.ConnectionClosed as closed:
                client.endings.append(closed.rcvd.code if closed.rcvd else None)
            except (OSError, asyncio.TimeoutError, WebSocketException) as error:
                client.errors.append(repr(error))
            await asyncio.sleep(0.5)  # pacing the reconnection

    return client.run(lambda: asyncio.run(main()))


@dataclass
class Writer:
    """PUTs distinct values of long_scalar_w through the load balancer, one after the other."""

    url: str
    results: list[tuple[int, int | str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> Writer:
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()
        return self

    def _write(self) -> None:
        value = FIRST_WRITE
        while not self.stop.is_set():
            try:
                status: int | str = http("PUT", f"{self.url}?v={value}", timeout=15).status
            except Exception as error:  # a timeout too: a write that hung
                status = repr(error)
            self.results.append((value, status))
            value += 1
            self.stop.wait(0.05)  # pacing: about 15 writes/s

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def audited(cluster: Cluster) -> list[dict[str, Any]]:
    """Every replica's audit lines about long_scalar_w (each replica has its own file)."""
    lines = []
    for replica in cluster.replicas:
        path = Path(replica.env["MTANGO_AUDIT_LOG"])
        if path.exists():
            lines += [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in lines if e["target"].get("attribute") == "long_scalar_w"]


def test_a_rolling_restart(cluster: Cluster, proxy) -> None:
    cluster.all_up()
    base = cluster.nginx.base
    tango = f"{cluster.tango_host}/{DEMO_DEVICE}/pushed_counter"
    live = live_stream_client(f"{base}/live/stream?tango={tango}&pv={PV}")
    mtango = mtango_client(base, [target(cluster, "pushed_counter")])
    pvws = pvws_client(f"ws://127.0.0.1:{cluster.nginx.port}/pvws/pv", PV)
    clients = {"live": live, "mtango": mtango, "pvws": pvws}
    watched = {"live": [tango, PV], "mtango": ["pushed_counter"], "pvws": [PV]}
    writer = Writer(f"{base}{cluster.device}/attributes/long_scalar_w/value").run()

    def fresh_values_since(moment: float) -> bool:
        return all(c.latest_at(t) > moment for n, c in clients.items() for t in watched[n])

    try:
        poll("values on every client", lambda: fresh_values_since(0.0))
        for replica in cluster.replicas:
            assert replica.main is not None
            replica.main.process.send_signal(signal.SIGTERM)
            poll(f"replica {replica.index} exits", lambda r=replica: not r.running, timeout=40)
            assert replica.main.process.returncode == 0, replica.main.log.read_text()
            replica.start()
            restarted = time.monotonic()
            # Every client has its values again (reconnected if its replica was this one), and
            # the writes go on, before the next replica goes.
            poll("values on every client after the restart",
                 lambda m=restarted: fresh_values_since(m))
            acknowledged = len([s for _, s in writer.results if s == 200])
            poll("writes acknowledged after the restart", lambda a=acknowledged: len(
                [s for _, s in writer.results if s == 200]) > a + 3)
    finally:
        writer.close()
        for client in clients.values():
            client.close()

    # Streams: each client lost its connection once at least (every replica was restarted), was
    # told to reconnect, reconnected, and its values went on increasing.
    assert live.connections >= 2 and mtango.connections >= 2 and pvws.connections >= 2, (
        live.connections, mtango.connections, pvws.connections)
    assert "reconnect" in live.endings and "reconnect" in mtango.endings
    assert WS_SERVICE_RESTART in pvws.endings, pvws.endings
    for name, client in clients.items():
        for watched_target in watched[name]:
            values = [v.value for v in client.of(watched_target)]
            assert values == sorted(values), f"{name} {watched_target}: values went back"
            assert len(set(values)) >= 3
    # After each reconnection of the SSE and pvws clients the first value came at once and
    # complete (first: true on /live/stream, a full pvws update with its vtype).
    for client, targets in ((live, [tango, PV]), (pvws, [PV])):
        for number in range(2, client.connections + 1):
            for watched_target in targets:
                got = [v for v in client.of(watched_target) if v.connection == number]
                assert got and got[0].first, (number, watched_target)

    # Writes: every acknowledged one applied exactly once; none applied twice; the last
    # acknowledged one is the value left.
    results = dict(writer.results)
    acknowledged = [value for value, status in writer.results if status == 200]
    entries = poll("the audit lines of the acknowledged writes", lambda: (
        found := audited(cluster)) and {e["sent"] for e in found} >= set(acknowledged) and found)
    applied = Counter(e["sent"] for e in entries if e["result"] == "ok")
    assert all(applied[value] == 1 for value in acknowledged), [
        (v, applied[v]) for v in acknowledged if applied[v] != 1]
    assert max(Counter(e["sent"] for e in entries).values()) == 1, "a write audited twice"
    unacknowledged = {value: status for value, status in results.items() if status != 200}
    assert not [v for v in unacknowledged if applied[v] > 1]
    assert not [s for s in unacknowledged.values() if not isinstance(s, int)], unacknowledged
    assert len(acknowledged) >= 20
    assert proxy.read_attribute("long_scalar_w").value == acknowledged[-1]
    print(f"\nrolling restart: writes {Counter(results.values())}, audited ok "
          f"{sum(applied.values())}, unacknowledged applied "
          f"{[v for v in unacknowledged if applied[v]]}; connections live {live.connections} "
          f"mtango {mtango.connections} pvws {pvws.connections}; endings live {live.endings} "
          f"mtango {mtango.endings} pvws {pvws.endings}; errors live {live.errors} "
          f"mtango {mtango.errors} pvws {pvws.errors}")
    # nginx sends reads to every replica again (the restarted ones too).
    cluster.all_up()
