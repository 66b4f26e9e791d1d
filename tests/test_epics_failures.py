"""EPICS failures: a PV no IOC has (504) against an IOC that stopped (503), recovery when it comes
back, health, the allow/deny rules, bad input, oversized arrays, no EPICS configuration."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mtango.config import Config
from tests.bridge import InProcessBridge, Reply, poll
from tests.conftest import EPICS_TIMEOUT_MS

V1 = "/epics/rest/v1"
PATIENT_MS = 3000  # long enough for another request to be served meanwhile, on any machine




def reason(reply: Reply) -> str:
    body = reply.json()
    assert body["quality"] == "FAILURE"
    assert set(body["errors"][0]) == {"reason", "description", "severity", "origin"}
    return body["errors"][0]["reason"]


def test_a_pv_no_ioc_has_is_a_connect_timeout(epics_bridge):
    paths = [f"{V1}/pvs/cp:not_a_pv{suffix}" for suffix in ("/value", "", "/info")]
    with ThreadPoolExecutor(len(paths)) as pool:
        replies = list(pool.map(epics_bridge.get, paths))
    for reply in replies:
        assert reply.status == 504
        assert reason(reply) == "EPICS_CONNECT_TIMEOUT"
        assert f"{EPICS_TIMEOUT_MS} ms" in reply.json()["errors"][0]["description"]


# caproto's subscription thread may die when the IOC goes while a monitor is being set up; the
# bridge starts it again (ChannelPool.watch_context), pytest reports the thread's exception.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_stopped_ioc_is_disconnected_then_recovers(epics_bridge, restart_ioc):
    pv = f"{V1}/pvs/{restart_ioc.pv('double')}/value"
    assert epics_bridge.get(pv).json()["value"] == 1.234
    assert epics_bridge.get(f"{V1}/health").status == 200
    restart_ioc.stop()
    try:
        reply = poll("read of a stopped IOC's PV", lambda: (r := epics_bridge.get(pv)).status
                     != 200 and r)
        assert reply.status == 503
        assert reason(reply) == "EPICS_DISCONNECTED"
        items = epics_bridge.get(f"{V1}/pvs/value?pv={restart_ioc.pv('double')}&pv=cp:double")
        assert items.status == 200
        lost, fine = items.json()
        assert lost["errors"][0]["reason"] == "EPICS_DISCONNECTED" and lost["connected"] is False
        assert fine["value"] == 1.234  # the other IOC is not affected
        health = poll("health 503", lambda: (h := epics_bridge.get(f"{V1}/health")).status
                      == 503 and h)
        state = {a["address"]: a["reachable"] for a in health.json()["addresses"]}
        assert state[restart_ioc.address] is False
        assert health.json()["channels"]["disconnected"] >= 1
    finally:
        restart_ioc.start()
    reply = poll("read after the IOC restarted", lambda: (r := epics_bridge.get(pv)).status
                 == 200 and r)
    assert reply.json()["value"] == 1.234
    assert poll("health 200", lambda: epics_bridge.get(f"{V1}/health").status == 200)


def test_an_ioc_that_stops_answering_is_a_read_timeout(epics_bridge, restart_ioc):
    """A connected IOC that no longer answers (here: its process paused, its sockets open) gives
    504 EPICS_READ_TIMEOUT; the unanswered read is then dropped, so the next request asks the
    IOC again instead of joining it, and reads succeed once the IOC answers again."""
    pv = f"{V1}/pvs/{restart_ioc.pv('double')}/value?fresh=1"
    assert epics_bridge.get(pv).status == 200
    process = restart_ioc.managed.process
    process.send_signal(signal.SIGSTOP)
    try:
        before = epics_bridge.get(f"{V1}/health").json()["reads"]
        for _ in range(2):
            reply = epics_bridge.get(pv)
            assert reply.status == 504
            assert reason(reply) == "EPICS_READ_TIMEOUT"
            assert f"within {EPICS_TIMEOUT_MS} ms" in reply.json()["errors"][0]["description"]
        after = epics_bridge.get(f"{V1}/health").json()["reads"]
        assert after["upstream"] - before["upstream"] == 2
        assert after["shared"] == before["shared"]
    finally:
        process.send_signal(signal.SIGCONT)
    assert poll("a read after the IOC woke up", lambda: epics_bridge.get(pv).status == 200)


@pytest.fixture(scope="module")
def ruled_bridge(caproto_ioc) -> InProcessBridge:
    config = Config(
        epics_ca_addr_list=(caproto_ioc.address,),
        epics_connect_timeout_ms=PATIENT_MS,
        epics_read_timeout_ms=EPICS_TIMEOUT_MS,
        epics_allow=(r"cp:.*",),
        epics_deny=(r"cp:long", r".*\$"),
        epics_ca_max_array_bytes=400,
    )
    running = InProcessBridge(config).start()
    yield running
    running.stop()


def test_denied_names_are_403_and_never_searched(ruled_bridge, pyepics):
    assert pyepics.caget("cp:long", timeout=5) == 123456  # the PV exists
    for name in ("cp:long", "cp:string.VAL$", "sf:ai"):
        reply = ruled_bridge.get(f"{V1}/pvs/{name}/value")
        assert reply.status == 403, name
        assert reason(reply) == "EPICS_PV_DENIED"
    items = ruled_bridge.get(f"{V1}/pvs/value?pv=cp:long&pv=cp:short").json()
    assert items[0]["errors"][0]["reason"] == "EPICS_PV_DENIED"
    assert items[1]["value"] == -7
    channels = ruled_bridge.get(f"{V1}/health").json()["channels"]
    assert channels["total"] == 1  # cp:short only: denied names opened no channel


def test_arrays_over_the_byte_limit_are_413(ruled_bridge):
    reply = ruled_bridge.get(f"{V1}/pvs/cp:waveform/value")  # 100 doubles = 800 bytes > 400
    assert reply.status == 413
    assert reason(reply) == "EPICS_ARRAY_TOO_LARGE"
    reply = ruled_bridge.get(f"{V1}/pvs/cp:waveform/value?count=10")
    assert reply.status == 200 and len(reply.json()["value"]) == 10


@pytest.mark.parametrize(
    "path",
    [
        "/pvs/cp:double/value?count=0",
        "/pvs/cp:double/value?count=x",
        "/pvs/cp:double/value?max_age=-1",
        "/pvs/cp:double/value?fresh=maybe",
        "/pvs/cp:double/value?encoding=xml",
        "/pvs/has%20space/value",
        "/pvs/" + "x" * 300 + "/value",
        "/pvs/caf%C3%A9/value",
        "/pvs",
        "/pvs?pv=a&pv=b",
        "/pvs/info",
    ],
)
def test_bad_input_is_400(epics_bridge, path):
    reply = epics_bridge.get(V1 + path)
    assert reply.status == 400, reply.body
    assert reply.json()["quality"] == "FAILURE"


def test_without_epics_configuration_nothing_is_contacted():
    running = InProcessBridge(Config()).start()
    try:
        assert running.app.ctx.epics.pool is None  # no caproto context, no CA traffic
        reply = running.get(f"{V1}/pvs/cp:double/value")
        assert reply.status == 503 and reason(reply) == "EPICS_NOT_CONFIGURED"
        health = running.get(f"{V1}/health")
        assert health.status == 503 and health.json()["status"] == "NOT_CONFIGURED"
    finally:
        running.stop()


def test_a_dead_ioc_does_not_delay_other_pvs(ruled_bridge):
    """While one request waits for a PV no IOC answers, others are served."""
    slow: dict[str, Reply] = {}
    thread = threading.Thread(
        target=lambda: slow.update(reply=ruled_bridge.get(f"{V1}/pvs/cp:absent_too/value"))
    )
    assert ruled_bridge.get(f"{V1}/pvs/cp:double/value").status == 200
    thread.start()
    served_meanwhile = 0
    try:
        while thread.is_alive():
            assert ruled_bridge.get(f"{V1}/pvs/cp:double/value").status == 200
            served_meanwhile += thread.is_alive()
    finally:
        thread.join(10)
    assert slow["reply"].status == 504
    assert served_meanwhile > 0


class HungIoc:
    """A broken IOC: answers CA searches for its names, accepts TCP connections, then never
    answers (as a wedged IOC or a half-open firewall does). Built from caproto's protocol layer."""

    def __init__(self, names: list[str]) -> None:
        import socket

        from mtango.demo.stack import free_port

        self.names = set(names)
        self.port = free_port(udp=True)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(8)
        self.held: list[Any] = []
        for target in (self._answer_searches, self._accept_and_ignore):
            threading.Thread(target=target, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _answer_searches(self) -> None:
        import caproto as ca

        broadcaster = ca.Broadcaster(our_role=ca.SERVER)
        while True:
            try:
                data, sender = self.udp.recvfrom(65536)
            except OSError:
                return
            commands = broadcaster.recv(data, sender)
            broadcaster.process_commands(commands)
            found = [ca.SearchResponse(self.port, None, c.cid, ca.DEFAULT_PROTOCOL_VERSION)
                     for c in commands if isinstance(c, ca.SearchRequest) and c.name in self.names]
            if found:
                reply = ca.VersionResponse(ca.DEFAULT_PROTOCOL_VERSION)
                self.udp.sendto(broadcaster.send(reply, *found), sender)

    def _accept_and_ignore(self) -> None:
        while True:
            try:
                self.held.append(self.tcp.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for sock in (self.udp, self.tcp, *self.held):
            sock.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_ioc_that_hangs_does_not_break_the_bridge(caproto_ioc):
    """caproto's search thread dies when a circuit does not come up; the bridge notices,
    starts a new client context, and serves every other PV, old and new, again."""
    hung = HungIoc(["hung:pv"])
    running = InProcessBridge(Config(
        epics_ca_addr_list=(caproto_ioc.address, hung.address),
        epics_connect_timeout_ms=EPICS_TIMEOUT_MS,
        epics_read_timeout_ms=EPICS_TIMEOUT_MS,
    )).start()
    try:
        assert running.get(f"{V1}/pvs/cp:double/value").status == 200
        reply = running.get(f"{V1}/pvs/hung:pv/value")
        assert reply.status == 504 and reason(reply) == "EPICS_CONNECT_TIMEOUT"
        poll("a new client context", lambda: running.get(f"{V1}/health").json()["reads"][
            "context_resets"] >= 1)
        assert running.get(f"{V1}/pvs/cp:short/value").json()["value"] == -7  # a new name
        assert running.get(f"{V1}/pvs/cp:double/value").json()["value"] == 1.234
    finally:
        running.stop()
        hung.close()


def test_health_sees_a_frozen_ioc(tmp_path):
    """A frozen IOC (SIGSTOP) still has its TCP connections accepted by the kernel: the health
    check must speak CA (an echo) to tell, and see the IOC back once it answers again."""
    from mtango.demo.ioc import start_ioc

    ioc = start_ioc("caproto", prefix="frz:", workdir=tmp_path)
    bridge = InProcessBridge(Config(
        epics_ca_addr_list=(ioc.address,), epics_connect_timeout_ms=EPICS_TIMEOUT_MS,
        epics_read_timeout_ms=EPICS_TIMEOUT_MS)).start()
    try:
        assert bridge.get(f"{V1}/health").status == 200
        os.kill(ioc.managed.process.pid, signal.SIGSTOP)
        try:
            health = poll("health 503", lambda: (h := bridge.get(f"{V1}/health")).status == 503
                          and h)
            (address,) = health.json()["addresses"]
            assert address["reachable"] is False
            assert "echo" in address["error"]
        finally:
            os.kill(ioc.managed.process.pid, signal.SIGCONT)
        poll("health 200 again", lambda: bridge.get(f"{V1}/health").status == 200)
    finally:
        bridge.stop()
        ioc.stop()
