"""pvws benchmark: many WebSocket clients, each watching many PVs that change at 10 Hz, one worker.

Run ``.venv/bin/python bench/pvws_bench.py [--clients 100] [--pvs 100] [--window 10]``
(``--clients 100,20`` runs every case for each count). Everything is measured in this one run, on
this machine, against a baseline measured the same way:

1. A caproto IOC on a free loopback port serves ``--pvs`` doubles ``pvb:changing:NNNN`` that
   change 10 times a second (``mtango.demo.ioc``, ``changing=N``; each change is stamped with the
   IOC's wall time). The bridge runs as ``main.py --workers 1`` with that address only
   (``EPICS_CA_AUTO_ADDR_LIST=NO``; the Tango host is never contacted) and ``events_linger_s``
   shortened to 2 s, so that "after the clients left" comes sooner.
2. Baseline: a pyepics (libca) client in a process of its own monitors the same PVs for the same
   window: updates/s received and delay (reception wall time - the update's EPICS time stamp).
3. Cases, each with ``--clients`` clients in ``--procs`` processes (asyncio; the WebSocket client
   is the ``websockets`` package's sans-I/O protocol on an asyncio transport, which costs the
   client processes a fraction of what its per-message ``recv()`` costs: the clients share the
   cores with the worker):

   ``pvws``          each client opens ``/pvws/pv`` and sends one ``subscribe`` of all the PVs;
   ``pvws-limited``  the same with ``?max_rate=`` ``--max-rate`` (2): the rest is coalesced;
   ``sse``           each client opens ``GET /live/stream?pv=...`` naming all the PVs.

   Once every client has the first (full) update of every PV, a window of ``--window`` s: updates
   received/s by all clients, delay p50/p99 (reception wall time - the update's ``seconds`` and
   ``nanos``: pvws deltas carry what changed, so each client merges them as pvws.js does), the
   worker's CPU over the window, its RSS before the clients came, during, and after they left and
   the monitors were dropped; from the bridge: the updates its hub received from the IOC (x the
   clients: what was offered in fact), and what it sent and coalesced (``/pvws/summary``: the
   sockets' ``sent`` and ``coalesced``; ``/tango/rest/sys/subscriptions``: the SSE streams'
   ``coalesced``).

Issue: "updates delivered per second by one worker to 100 WebSocket clients each watching 100 PVs
that change at 10 Hz (100 000 per second offered)", p99 delay, CPU and RSS, next to the same load
through the SSE stream; for reference, Coniql (a Python GraphQL gateway for EPICS) publishes about
2 000 updates per second. The IOC, the worker and the clients share this machine's cores: absolute
figures are this machine's. No figure fails the run; errors do (a client that cannot connect, a
refused handshake, a connection the server ends, an error message, a PV that disconnects). The
results also go to ``bench/results/pvws_bench.json`` (``--json``).

``--server-max-rate`` sets the bridge's ``pvws_max_rate_hz`` (10 by default, the PVs' own rate),
to tell the limit's share from the worker's. The worker's write system calls (``/proc/PID/io``)
are printed with its CPU: they show how many updates go out per write.

On the 2-core development machine (quiet runs), 100 clients x 100 PVs, of about 97,000 updates/s
that came from the IOC. First version: pvws delivered 81,000 to 89,000/s (6,000 to 14,000/s
coalesced by the rate limit, whose next slot followed the previous *send*), p50 78 to 91 ms, p99
144 to 226 ms, worker 77 to 88% of a core (9 to 11 us per update: one write system call per
update, deltas recomputed by sockets out of step), RSS +55 MB (30 s of recent events kept per
PV). After the fixes (frames of a batch written at once, slots following slots, deltas shared per
earlier event, no recent events for PVs): pvws 96,900/s (all of them), none coalesced, p50 39 ms,
p99 73 ms, worker 25% (2.6 us per update, about 50 updates per write), RSS 101/109/109 MB. SSE:
97,000/s, p50 35 ms, p99 76 ms, 24%. ``max_rate=2``: 20,000/s, the rest coalesced. That is 48
times Coniql's 2,000/s, each client getting 100% of what a direct pyepics client gets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import stream_clients  # noqa: E402
from bench.live_bench import (  # noqa: E402
    CLK_TCK,
    collect_window,
    cpu_seconds,
    percentile,
    rss_mb,
    worker_pid,
)
from bench.stream_clients import StreamClient  # noqa: E402
from mtango.demo.ioc import start_ioc  # noqa: E402
from tests.bridge import MainProcess, child_env, poll  # noqa: E402

RATE_HZ = 10.0  # how often the IOC's changing PVs change (mtango.demo.ioc.FAST_HZ)
CONIQL_PER_S = 2000.0  # Coniql's published figure (updates per second), from the issue
LINGER_S = 2.0
PREFIX = "pvb:"
CASES = ("pvws", "pvws-limited", "sse")
RESULTS = ROOT / "bench" / "results" / "pvws_bench.json"
CONNECT_TIMEOUT = 60.0  # every client connected (handshake answered)
READY_TIMEOUT = 120.0  # every client has the first update of every PV


# -- the direct CA client (baseline) --------------------------------------------------------------

_DIRECT = """
import json, sys, time
import epics
names, window = json.loads(sys.argv[1]), float(sys.argv[2])
times, delays, seen = [], [], set()
def received(pvname=None, timestamp=None, **kw):
    now = time.time()
    seen.add(pvname)
    times.append(now)
    delays.append((now - timestamp) * 1000)  # pyepics' timestamp is Unix time already
pvs = [epics.PV(n, form="time", auto_monitor=True, callback=received) for n in names]
deadline = time.time() + 30
while len(seen) < len(names):
    if time.time() > deadline:
        sys.exit(f"only {len(seen)} of {len(names)} PVs sent a value within 30 s")
    time.sleep(0.01)
start = time.time() + 1.0
end = start + window
time.sleep(end - time.time())
kept = [d for t, d in zip(times, delays) if start <= t < end]
print(json.dumps({"delays": kept, "seconds": end - start}))
"""


def direct_client(address: str, names: list[str], window: float) -> dict[str, Any]:
    env = child_env(EPICS_CA_ADDR_LIST=address, EPICS_CA_AUTO_ADDR_LIST="NO")
    done = subprocess.run([sys.executable, "-c", _DIRECT, json.dumps(names), str(window)],
                          env=env, capture_output=True, text=True, timeout=window + 90)
    if done.returncode != 0:
        raise RuntimeError(f"direct pyepics client failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"received": len(result["delays"]), "seconds": result["seconds"],
            "delays": result["delays"]}


# -- clients (asyncio protocols: one data_received handles every message a read brought) -----------


class Window:
    """The measured window and what a client process recorded in it."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")
        self.delays = array("d")  # ms, every update received in the window

    def record(self, now: float, seconds: int, nanos: int) -> bool:
        if self.start <= now < self.end:
            self.delays.append((now - seconds - nanos * 1e-9) * 1000)
            return True
        return False


class Client(StreamClient):
    """One connection watching ``names``; ``ready`` once the first update of every name has
    come (``first``)."""

    names: list[str]
    window: Window
    stamps: dict[str, list[int]]  # per PV: [seconds, nanos] as merged so far

    def watch(self, names: list[str], window: Window) -> None:
        self.names, self.window, self.stamps = names, window, {}

    def first(self, name: str) -> None:
        if len(self.stamps) == len(self.names) and not self.ready.done():
            self.ready.set_result(None)


# One SSE message of a PV value: its target and the value's time stamp (compact JSON, fixed key
# order: target, kind, first, connected, value{name, ..., timestamp, seconds, nanos, ...}).
_SSE_VALUE = re.compile(
    rb'\ndata: \{"target":"((?:[^"\\]|\\.)*)","kind":"pv","first":(?:true|false),'
    rb'"connected":true,"value":\{[^\n]*?"seconds":(\d+),"nanos":(\d+)')
_SSE_DATA = re.compile(rb"\ndata: ")


class SseClient(Client, stream_clients.SseClient):
    """An EventSource-like client of ``/live/stream``."""

    def __init__(self, port: int, path: str, names: list[str], window: Window) -> None:
        super().__init__(f"127.0.0.1:{port}", path)
        self.watch(names, window)

    def messages(self, now: float, data: bytes, end: int) -> None:
        values = 0
        for match in _SSE_VALUE.finditer(data, 0, end):
            values += 1
            name = match.group(1).decode()
            if name not in self.stamps:
                self.stamps[name] = [0, 0]
                self.first(name)
            if self.window.record(now, int(match.group(2)), int(match.group(3))):
                self.counted += 1
        others = len(_SSE_DATA.findall(data, 0, end)) - values
        if others:
            self.problem(f"{others} messages that are not a value: "
                         f"{data[max(0, end - 302):end - 2]!r}")


class PvwsClient(Client, stream_clients.WsClient):
    """A pvws client: one ``subscribe`` of every name, then updates merged per PV."""

    def __init__(self, url: str, names: list[str], window: Window) -> None:
        super().__init__(url)
        self.watch(names, window)

    def opening(self) -> None:
        self.opened.set_result(None)
        self.send({"type": "subscribe", "pvs": self.names})

    def message(self, now: float, data: bytes) -> None:
        update = json.loads(data)
        if update.get("type") != "update":
            self.problem(json.dumps(update))
            return
        if update.get("connected") is False:
            self.problem(json.dumps(update))
        name = update["pv"]
        stamp = self.stamps.get(name)
        if stamp is None:
            stamp = self.stamps[name] = [update.get("seconds", 0), update.get("nanos", 0)]
            self.first(name)
        else:  # a delta: Object.assign, as pvws.js merges it
            if "seconds" in update:
                stamp[0] = update["seconds"]
            if "nanos" in update:
                stamp[1] = update["nanos"]
        if self.window.record(now, stamp[0], stamp[1]):
            self.counted += 1


def client_process(case: str, port: int, path: str, names: list[str], count: int,
                   conn: Any) -> None:
    """``count`` clients on one asyncio loop; reports through ``conn`` (a Pipe end)."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        window = Window()
        gate = asyncio.Semaphore(16)  # a few handshakes at a time

        def make() -> Client:
            if case.startswith("pvws"):
                return PvwsClient(f"ws://127.0.0.1:{port}{path}", names, window)
            return SseClient(port, path, names, window)

        async def connect() -> Client:
            async with gate:
                _, client = await asyncio.wait_for(
                    loop.create_connection(make, "127.0.0.1", port), CONNECT_TIMEOUT)
                await asyncio.wait_for(client.opened, CONNECT_TIMEOUT)
            return client

        clients = await asyncio.gather(*(connect() for _ in range(count)))
        try:
            await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), READY_TIMEOUT)
        except asyncio.TimeoutError:
            have = sorted(len(c.stamps) for c in clients)
            raise RuntimeError(f"not every client had every PV within {READY_TIMEOUT:.0f} s: "
                               f"PVs per client {have[0]}..{have[-1]}") from None
        conn.send("ready")
        window.start, window.end = await loop.run_in_executor(None, conn.recv)
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, window.end - time.time()))
        cpu = time.process_time() - cpu0
        await asyncio.sleep(0.3)  # what arrives now is past the window, but tells of errors
        conn.send({
            "delays": window.delays.tobytes(),
            "per_client": [c.counted for c in clients],
            "lost": [c.lost for c in clients if c.lost],
            "problems": [p for c in clients for p in c.problems][:5],
            "problem_count": sum(c.problem_count for c in clients),
            "cpu": cpu,
        })
        # Connected until the parent has the bridge's figures of the end of the window.
        await loop.run_in_executor(None, conn.poll, 120)
        for client in clients:
            client.close()

    try:
        asyncio.run(run())
    except BaseException as exc:  # report, do not hang the parent
        conn.send({"fatal": repr(exc)})
        raise SystemExit(1) from None


# -- the bridge -----------------------------------------------------------------------------------


def figures(bridge: MainProcess) -> dict[str, Any]:
    """The worker's live figures now: hub totals, SSE streams, pvws sockets."""
    t0 = time.time()
    live = bridge.get("/tango/rest/sys/subscriptions", timeout=60).json()
    t1 = time.time()
    pvws = bridge.get("/pvws/summary", timeout=60).json()
    t2 = time.time()
    sse = [s for s in live["streams"] if s.get("stream") == "live"]
    return {
        # when each answer was made, about (a busy worker answers late)
        "time_live": (t0 + t1) / 2, "time_pvws": (t1 + t2) / 2,
        "events": live["totals"]["events"],  # updates the hub received from the IOC
        "errors": live["totals"]["errors"],
        "listeners": live["totals"]["listeners"],
        "sent": sum(s["sent"] for s in pvws["sockets"]),
        "coalesced": (sum(s["coalesced"] for s in pvws["sockets"])
                      + sum(s["coalesced"] for s in sse)),
        "queued": sum(s["queued"] for s in pvws["sockets"]) + sum(s["queued"] for s in sse),
        "sockets": pvws["clients"], "streams": len(sse),
        "monitors": pvws["subscriptions"],
    }


def write_calls(pid: int) -> int:
    """The process's write system calls so far (``syscw``: write, writev, send...)."""
    with open(f"/proc/{pid}/io") as handle:
        for line in handle:
            if line.startswith("syscw:"):
                return int(line.split()[1])
    raise RuntimeError(f"no syscw for {pid}")


def settle(bridge: MainProcess) -> None:
    """Every client gone and every monitor dropped (after the linger)."""
    def quiet() -> bool:
        totals = bridge.get("/tango/rest/sys/subscriptions", timeout=30).json()["totals"]
        return totals["streams"] == 0 and totals["upstreams"] == 0 and totals["listeners"] == 0

    poll("clients gone, monitors dropped", quiet, timeout=90, interval=0.2)


class Sampler:
    """During the window: the worker's and the IOC's CPU, the worker's largest RSS, and the
    bridge's figures at both ends."""

    def __init__(self, bridge: MainProcess, pid: int, ioc_pid: int) -> None:
        self.bridge, self.pid, self.ioc_pid = bridge, pid, ioc_pid
        self.cpu = self.ioc_cpu = self.rss = self.writes = 0.0
        self.first: dict[str, Any] = {}
        self.last: dict[str, Any] = {}

    def __call__(self, start: float, end: float) -> None:
        time.sleep(max(0.0, start - time.time()))
        cpu0, ioc0, t0 = cpu_seconds(self.pid), cpu_seconds(self.ioc_pid), time.time()
        writes0 = write_calls(self.pid)
        self.first = figures(self.bridge)
        while time.time() < end:
            self.rss = max(self.rss, rss_mb(self.pid))
            time.sleep(min(0.5, max(0.0, end - time.time())))
        elapsed = time.time() - t0
        self.cpu = (cpu_seconds(self.pid) - cpu0) / elapsed * 100
        self.ioc_cpu = (cpu_seconds(self.ioc_pid) - ioc0) / elapsed * 100
        self.writes = (write_calls(self.pid) - writes0) / elapsed
        self.rss = max(self.rss, rss_mb(self.pid))
        self.last = figures(self.bridge)


def run_case(case: str, bridge: MainProcess, pid: int, ioc_pid: int, names: list[str],
             clients: int, procs: int, window: float, max_rate: float) -> dict[str, Any]:
    settle(bridge)
    before = rss_mb(pid)
    if case == "sse":
        path = "/live/stream?" + "&".join(f"pv={quote(n, safe=':')}" for n in names)
    elif case == "pvws-limited":
        path = f"/pvws/pv?max_rate={max_rate:g}"
    else:
        path = "/pvws/pv"
    ctx = mp.get_context("fork")
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    pipes, processes = [], []
    sampler = Sampler(bridge, pid, ioc_pid)
    try:
        for share in shares:
            parent, child = ctx.Pipe()
            process = ctx.Process(target=client_process,
                                  args=(case, bridge.port, path, names, share, child))
            process.start()
            child.close()
            pipes.append(parent)
            processes.append(process)
        results, start, end = collect_window(case, pipes, "ready",
                                             CONNECT_TIMEOUT + READY_TIMEOUT + 30, window, sampler)
    finally:
        for pipe in pipes:  # the clients may go
            try:
                pipe.send("close")
            except OSError:
                pass
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
    settle(bridge)
    after = rss_mb(pid)
    first, last = sampler.first, sampler.last
    span = last["time_live"] - first["time_live"]
    span_pvws = last["time_pvws"] - first["time_pvws"]
    kind = "sockets" if case.startswith("pvws") else "streams"
    delays = array("d")
    for result in results:
        delays.frombytes(result["delays"])
    per_client = sorted(n for r in results for n in r["per_client"])
    received = len(delays)
    arrived = (last["events"] - first["events"]) / span  # updates from the IOC, per second
    return {
        "case": case, "clients": clients, "pvs": len(names), "procs": len(results),
        "path": path if case != "sse" else f"/live/stream?pv=... ({len(names)} pv)",
        "window_s": end - start,
        "offered_per_s": clients * len(names) * RATE_HZ,
        "ioc_updates_per_s": arrived,
        "offered_in_fact_per_s": arrived * clients,
        "delivered_per_s": received / (end - start),
        "sent_per_s": (last["sent"] - first["sent"]) / span_pvws if case != "sse" else None,
        "coalesced_per_s": (last["coalesced"] - first["coalesced"])
        / (span_pvws if case != "sse" else span),
        "connected": [first[kind], last[kind]],
        "queued_at_end": last["queued"],
        "delay_ms": {"p50": percentile(list(delays), 50), "p99": percentile(list(delays), 99),
                     "max": max(delays) if delays else float("nan")},
        "per_client_per_s": {"min": per_client[0] / (end - start),
                             "max": per_client[-1] / (end - start)},
        "worker_cpu_pct": sampler.cpu, "ioc_cpu_pct": sampler.ioc_cpu,
        "worker_write_calls_per_s": sampler.writes,
        "worker_us_per_update": sampler.cpu * 10_000 / max(received / (end - start), 1.0),
        "clients_cpu_pct": sum(r["cpu"] for r in results) / (end - start) * 100,
        "worker_rss_mb": {"before": before, "during": sampler.rss, "after": after},
        "hub_errors": last["errors"] - first["errors"],
        "lost": [x for r in results for x in r["lost"]],
        "problems": [p for r in results for p in r["problems"]][:5],
        "problem_count": sum(r["problem_count"] for r in results),
    }


# -- report ---------------------------------------------------------------------------------------


def finite(value: Any) -> Any:
    """``value`` with NaN (a percentile of nothing) as None: the results file is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def label(row: dict[str, Any], max_rate: float) -> str:
    name = {"pvws": "pvws", "sse": "SSE /live/stream",
            "pvws-limited": f"pvws max_rate={max_rate:g}"}[row["case"]]
    return f"{name}, {row['clients']}x{row['pvs']}"


def report(direct: dict[str, Any], rows: list[dict[str, Any]], args: Any, nofile: int) -> None:
    print(f"pvws benchmark: caproto IOC with {args.pvs} doubles changing at {RATE_HZ:.0f} Hz, "
          f"bridge main.py --workers 1, {args.window:g} s per case; {os.cpu_count()} cores shared "
          f"by the IOC, the bridge worker and the client processes; open files limit {nofile}")
    print(f"{'case':28}{'offered/s':>10}{'in fact':>9}{'deliv/s':>9}{'share':>6}"
          f"{'coal/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'worker':>7}{'IOC':>5}{'clients':>8}"
          f"   worker RSS MB before/during/after")
    rate = direct["received"] / direct["seconds"]
    print(f"{'direct pyepics, 1x' + str(args.pvs):28}{args.pvs * RATE_HZ:10.0f}{'':9}{rate:9.0f}"
          f"{rate / (args.pvs * RATE_HZ):6.0%}{'':9}{percentile(direct['delays'], 50):8.1f}"
          f"{percentile(direct['delays'], 99):8.1f}{'':7}{direct['ioc_cpu_pct']:4.0f}%")
    for row in rows:
        rss = row["worker_rss_mb"]
        print(f"{label(row, args.max_rate):28}{row['offered_per_s']:10.0f}"
              f"{row['offered_in_fact_per_s']:9.0f}{row['delivered_per_s']:9.0f}"
              f"{row['delivered_per_s'] / row['offered_in_fact_per_s']:6.0%}"
              f"{row['coalesced_per_s']:9.0f}{row['delay_ms']['p50']:8.1f}"
              f"{row['delay_ms']['p99']:8.1f}{row['worker_cpu_pct']:6.0f}%"
              f"{row['ioc_cpu_pct']:4.0f}%{row['clients_cpu_pct']:7.0f}%   "
              f"{rss['before']:.0f}/{rss['during']:.0f}/{rss['after']:.0f}")
    print("ratios of delivered/s: to Coniql's published 2000/s, to the direct client's rate "
          f"({rate:.0f}/s, one client), and per bridge client to the direct client")
    for row in rows:
        per = row["per_client_per_s"]
        sent = (f", server sent {row['sent_per_s']:.0f}/s"
                if row["sent_per_s"] is not None else "")
        print(f"  {label(row, args.max_rate):26}{row['vs_coniql']:6.1f} x Coniql, "
              f"{row['vs_direct']:6.1f} x direct; per client "
              f"{row['per_client_vs_direct']:.0%} of direct "
              f"({per['min']:.0f}..{per['max']:.0f}/s){sent}; "
              f"{row['queued_at_end']} waiting at the end; worker "
              f"{row['worker_write_calls_per_s']:.0f} write calls/s, "
              f"{row['worker_us_per_update']:.1f} us of worker CPU per update delivered")
        notes = []
        if row["problem_count"]:
            notes.append(f"{row['problem_count']} unexpected messages: {row['problems'][:2]}")
        if row["hub_errors"]:
            notes.append(f"{row['hub_errors']} failure events from the IOC")
        if row["connected"] != [row["clients"]] * 2:
            notes.append(f"the bridge counted {row['connected'][0]} then {row['connected'][1]} "
                         f"clients at the window's ends")
        if row["lost"]:
            notes.append(f"{len(row['lost'])} connections lost: {row['lost'][:2]}")
        if notes:
            print("    " + "; ".join(notes))
    print("offered = clients x PVs x 10 Hz; in fact = the updates the worker's monitors received "
          "from the IOC per second x clients (the IOC's period is 100 ms plus its own work); "
          "share = delivered / in fact; coal = updates replaced by a newer one of the same PV "
          "before they were sent (pvws: per socket and PV; SSE: in a client queue of 256 that "
          "was full); delay = client's wall time at reception - the update's time stamp (IOC's "
          "wall time when it changed the value); worker, IOC, clients = CPU % over the window.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="100",
                        help="clients per case, comma-separated for several runs of each case")
    parser.add_argument("--pvs", type=int, default=100, help="PVs each client watches")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per case")
    parser.add_argument("--procs", type=int, default=2, help="client processes per case")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--max-rate", type=float, default=2.0,
                        help="?max_rate= of the pvws-limited case (updates/s per PV)")
    parser.add_argument("--server-max-rate", type=float,
                        help="the bridge's pvws_max_rate_hz (default: its own default, 10)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where the results go")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown or not cases or not counts or min(counts) < 1 or args.pvs < 1:
        parser.error(f"cases among {', '.join(CASES)}; at least one client and one PV"
                     + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(counts) * 2 + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    workdir = Path(f"/tmp/mtango-bench-pvws-{time.time_ns()}")
    workdir.mkdir()
    ioc = start_ioc("caproto", prefix=PREFIX, changing=args.pvs, workdir=workdir)
    names = [ioc.pv(f"changing:{i:04d}") for i in range(args.pvs)]
    assert ioc.managed is not None
    ioc_pid = ioc.managed.process.pid
    bridge = None
    rows = []
    try:
        ioc0, t0 = cpu_seconds(ioc_pid), time.time()
        direct = direct_client(ioc.address, names, args.window)
        direct["ioc_cpu_pct"] = (cpu_seconds(ioc_pid) - ioc0) / (time.time() - t0) * 100
        env = child_env(TANGO_HOST="127.0.0.1:1",  # never contacted: only EPICS is asked
                        EPICS_CA_ADDR_LIST=ioc.address, EPICS_CA_AUTO_ADDR_LIST="NO",
                        MTANGO_EVENTS_LINGER_S=str(LINGER_S))
        if args.server_max_rate:
            env["MTANGO_PVWS_MAX_RATE_HZ"] = f"{args.server_max_rate:g}"
        bridge = MainProcess(["--workers", "1"], env, workdir / "bridge.log")
        bridge.wait_ready("/health/live")
        pid = worker_pid(bridge)
        # Warm-up (not measured): the worker's first channels, monitors, sockets and streams.
        for case in cases:
            run_case(case, bridge, pid, ioc_pid, names, 1, 1, 1.0, args.max_rate)
        for clients in counts:
            for case in cases:
                row = run_case(case, bridge, pid, ioc_pid, names, clients, args.procs,
                               args.window, args.max_rate)
                rows.append(row)
    finally:
        if bridge is not None:
            bridge.stop()
        ioc.stop()

    direct_rate = direct["received"] / direct["seconds"]
    for row in rows:
        row["vs_coniql"] = row["delivered_per_s"] / CONIQL_PER_S
        row["vs_direct"] = row["delivered_per_s"] / direct_rate
        row["per_client_vs_direct"] = row["delivered_per_s"] / row["clients"] / direct_rate
    report(direct, rows, args, nofile)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(finite({
        "benchmark": "bench/pvws_bench.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "clock_ticks": CLK_TCK},
        "args": {"clients": counts, "pvs": args.pvs, "window_s": args.window,
                 "procs": args.procs, "cases": cases, "max_rate": args.max_rate,
                 "server_max_rate": args.server_max_rate},
        "coniql_per_s": CONIQL_PER_S,
        "direct": {"client": "pyepics", "pvs": args.pvs, "received_per_s": direct_rate,
                   "delay_ms": {"p50": percentile(direct["delays"], 50),
                                "p99": percentile(direct["delays"], 99)},
                   "ioc_cpu_pct": direct["ioc_cpu_pct"]},
        "cases": rows,
    }), indent=1) + "\n")
    print(f"results: {args.json}")
    # A lost connection, an error message or a disconnected PV is an error of the run, not a
    # figure: with a healthy IOC on loopback none should happen.
    failed = [label(r, args.max_rate) for r in rows if r["lost"] or r["problem_count"]]
    if failed:
        print(f"errors in: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
