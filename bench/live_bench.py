"""Live values benchmark: one attribute changing at 10 Hz, pushed to many clients by one worker.

Run ``.venv/bin/python bench/live_bench.py [--clients 1,100,1000] [--window 10]``. Everything is
measured in this one run, on this machine, against a baseline measured the same way:

1. The demo Tango stack starts (``sys/tg_test/1`` pushes ``pushed_counter`` as a Tango change
   event every 100 ms), then the bridge as ``main.py --workers 1`` against it, with
   ``events_linger_s`` shortened to 2 s so that "after the clients left" comes sooner.
2. Baseline: a PyTango client in a process of its own subscribes to the change event of
   ``pushed_counter`` and records, for the same window, each event's delay: reception time
   minus the event's timestamp (``attr_value.time``), i.e. what Tango alone costs.
3. SSE: for each ``--clients`` count, one ``POST /tango/subscriptions`` of that target, shared by
   every client (each client its own ``GET .../event-stream``, so its own hub listener and queue).
   Clients run in ``--procs`` processes (raw asyncio sockets, minimal parsing: the ``id:`` of each
   message is the event's time in ms; delay = wall time at reception - id). Once all are
   connected, a window of ``--window`` s: deliveries/s, delay p50/p99, the worker's CPU (utime +
   stime over the window) and RSS before the clients came, during, and after they all left and
   the upstream was dropped (the linger).
4. Long polling: ``--pollers`` clients each looping ``GET .../pushed_counter/change?timeout=30000``
   on a keep-alive connection for the window: answers/s, delay of each answer from the event's
   timestamp, and request latency (sent to answered: mostly the wait for the next event).

Targets (issue): 1000 SSE clients at 10 Hz (10,000 deliveries/s) on one worker with p99 under
100 ms, RSS flat after the clients leave; 200 long-polling clients: requests/s and p99. The
device server, the bridge worker and the client processes share this machine's cores: absolute
figures are this machine's, the ratios to the direct client compare. No figure fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtango.demo import DEMO_DEVICE, DEMO_SERVER, start_tango_demo  # noqa: E402
from tests.bridge import MainProcess, child_env, http, poll  # noqa: E402

ATTRIBUTE = "pushed_counter"
RATE_HZ = 10.0  # the demo device's push rate (pushed_counter_period_ms = 100)
LINGER_S = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the worker's figures -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- the direct PyTango client (baseline) ---------------------------------------------------------

_DIRECT = """
import json, sys, time, tango
trl, attribute, window = sys.argv[1], sys.argv[2], float(sys.argv[3])
delays, times = [], []
def received(event):
    now = time.time()
    if not event.err:
        times.append(now)
        delays.append((now - event.attr_value.time.totime()) * 1000)
proxy = tango.DeviceProxy(trl)
event_id = proxy.subscribe_event(attribute, tango.EventType.CHANGE_EVENT, received)
while not times:  # the first event (the current value) has come: the connection is up
    time.sleep(0.01)
start = time.time()
time.sleep(window)
end = time.time()
proxy.unsubscribe_event(event_id)
kept = [d for t, d in zip(times, delays) if start <= t < end]
print(json.dumps({"delays": kept, "seconds": end - start}))
"""


def direct_client(trl: str, window: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _DIRECT, trl, ATTRIBUTE, str(window)], env=child_env(),
        capture_output=True, text=True, timeout=window + 60, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"deliveries": len(result["delays"]), "seconds": result["seconds"],
            "delays": result["delays"]}


# -- client processes -----------------------------------------------------------------------------

_ID = re.compile(rb"(?:^|\n)id: (\d+)\n")


async def _open(port: int, request: bytes, gate: asyncio.Semaphore
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    async with gate:  # a few connects at a time: the listen backlog is not 1000 deep
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        raise RuntimeError(f"event-stream: HTTP {status}")
    return reader, writer, head


async def _sse_client(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes],
                      window: list[float], delays: list[float], counts: list[int]) -> None:
    """Count ``id:`` lines (chunked encoding left in: its size lines never look like one)."""
    reader, writer, _ = conn
    rest = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                counts[1] += 1  # the server ended the stream
                return
            now = time.time()
            data = rest + chunk
            cut = data.rfind(b"\n\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 2:]
            if window[0] <= now < window[1]:
                now_ms = now * 1000
                for raw in _ID.findall(data, 0, cut + 2):
                    delays.append(now_ms - int(raw))
            elif now >= window[1]:
                return
    finally:
        writer.close()


async def _poller(port: int, path: str, window: list[float], delays: list[float],
                  latencies: list[float], counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    counts[2] += 1
    try:
        while time.time() < window[1]:
            sent = time.time()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            now = time.time()
            if int(head.split(b" ", 2)[1]) != 200:
                raise RuntimeError(f"long poll: HTTP {head.split(b' ', 2)[1]!r}")
            if window[0] <= now < window[1]:
                stamp = json.loads(body).get("timestamp")
                if stamp is None:
                    counts[1] += 1  # a failure body
                else:
                    delays.append(now * 1000 - stamp)
                latencies.append((now - sent) * 1000)
    finally:
        writer.close()


def client_process(mode: str, port: int, path: str, count: int, conn: Any) -> None:
    """``count`` clients on one asyncio loop; reports through ``conn`` (a Pipe end)."""

    async def run() -> dict[str, Any]:
        window = [float("inf"), float("inf")]
        delays: list[float] = []
        latencies: list[float] = []
        counts = [0, 0, 0]  # -, ended streams / failure answers, connected pollers
        if mode == "sse":
            gate = asyncio.Semaphore(32)
            request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                       "Accept: text/event-stream\r\n\r\n").encode()
            conns = await asyncio.gather(*(_open(port, request, gate) for _ in range(count)))
            tasks = [asyncio.create_task(_sse_client(c, window, delays, counts)) for c in conns]
        conn.send("connected")
        loop = asyncio.get_running_loop()
        window[:] = await loop.run_in_executor(None, conn.recv)
        cpu0 = time.process_time()
        if mode == "poll":
            tasks = [asyncio.create_task(
                _poller(port, path, window, delays, latencies, counts)) for _ in range(count)]
        await asyncio.sleep(max(0.0, window[1] - time.time()) + 0.2)
        cpu = time.process_time() - cpu0
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [repr(r) for r in results
                  if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
        return {"delays": delays, "latencies": latencies, "ended": counts[1],
                "errors": errors[:5], "error_count": len(errors), "cpu": cpu}

    try:
        conn.send(asyncio.run(run()))
    except BaseException as exc:  # report, do not hang the parent
        conn.send({"fatal": repr(exc)})
        raise


def run_clients(mode: str, port: int, path: str, clients: int, procs: int, window: float,
                on_window: Any) -> tuple[list[dict[str, Any]], float, float]:
    """Start the client processes, wait until all are connected, open the window, collect.

    ``on_window(start, end)`` runs in this process during the window (samples of the worker).
    Returns (per-process results, window start, end)."""
    ctx = mp.get_context("fork")
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    pipes, processes = [], []
    for share in shares:
        if not share:
            continue
        parent, child = ctx.Pipe()
        process = ctx.Process(target=client_process, args=(mode, port, path, share, child))
        process.start()
        pipes.append(parent)
        processes.append(process)
    results, start, end = collect_window(mode, pipes, "connected", 120, window, on_window)
    for process in processes:
        process.join(10)
    return results, start, end


def collect_window(what: str, pipes: list[Any], ready_word: str, ready_timeout: float,
                   window: float, on_window: Any) -> tuple[list[dict[str, Any]], float, float]:
    """Wait until every client process says ``ready_word``, open the measuring window (1 s
    ahead: connections settle, first messages out of the way), run ``on_window(start, end)``
    here meanwhile, and collect each process's result. Returns (results, start, end)."""
    for pipe in pipes:
        if not pipe.poll(ready_timeout):
            raise RuntimeError(f"{what}: client process not ready within {ready_timeout} s")
        ready = pipe.recv()
        if ready != ready_word:
            raise RuntimeError(f"{what}: client process failed: {ready}")
    start = time.time() + 1.0
    end = start + window
    for pipe in pipes:
        pipe.send((start, end))
    on_window(start, end)
    results = []
    for pipe in pipes:
        if not pipe.poll(window + 60):
            raise RuntimeError(f"{what}: client process did not report")
        result = pipe.recv()
        if "fatal" in result:
            raise RuntimeError(f"{what}: client process failed: {result['fatal']}")
        results.append(result)
    return results, start, end


# -- the bridge -----------------------------------------------------------------------------------


def worker_pid(bridge: MainProcess) -> int:
    figures = bridge.get("/tango/rest/sys/subscriptions").json()
    (worker,) = figures["workers"].values()
    return int(worker["pid"])


def live_totals(bridge: MainProcess) -> dict[str, Any]:
    return bridge.get("/tango/rest/sys/subscriptions").json()["totals"]


class Sampler:
    """The worker's CPU over the window and its largest RSS during it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = 0.0
        self.rss = 0.0

    def __call__(self, start: float, end: float) -> None:
        time.sleep(max(0.0, start - time.time()))
        cpu0, t0 = cpu_seconds(self.pid), time.time()
        while time.time() < end:
            self.rss = max(self.rss, rss_mb(self.pid))
            time.sleep(min(0.5, max(0.0, end - time.time())))
        self.cpu = (cpu_seconds(self.pid) - cpu0) / (time.time() - t0) * 100
        self.rss = max(self.rss, rss_mb(self.pid))


def settle(bridge: MainProcess) -> None:
    """Every client gone and every upstream dropped (after the linger)."""
    poll("clients gone, upstream dropped",
         lambda: (t := live_totals(bridge))["streams"] == 0 and t["upstreams"] == 0
         and t["listeners"] == 0, timeout=60, interval=0.2)


def sse_case(bridge: MainProcess, target: dict[str, str], pid: int, clients: int, procs: int,
             window: float) -> dict[str, Any]:
    settle(bridge)
    before = rss_mb(pid)
    totals0 = live_totals(bridge)
    reply = http("POST", bridge.base + "/tango/subscriptions", body=[target])
    sub = reply.json()
    if reply.status != 200 or sub.get("failures") or len(sub.get("events", [])) != 1:
        raise RuntimeError(f"subscription refused: {reply.status} {reply.body[:300]!r}")
    path = f"/tango/subscriptions/{sub['id']}/event-stream"
    sampler = Sampler(pid)
    results, start, end = run_clients("sse", bridge.port, path, clients, procs, window, sampler)
    totals1 = live_totals(bridge)
    http("DELETE", f"{bridge.base}/tango/subscriptions/{sub['id']}")
    settle(bridge)
    after = rss_mb(pid)
    delays = [d for r in results for d in r["delays"]]
    return {
        "clients": clients, "procs": len(results), "deliveries": len(delays),
        "seconds": end - start, "delays": delays, "cpu": sampler.cpu,
        "client_cpu": sum(r["cpu"] for r in results) / (end - start) * 100,
        "rss": (before, sampler.rss, after),
        "ended": sum(r["ended"] for r in results),
        "errors": [e for r in results for e in r["errors"]],
        "coalesced": totals1["coalesced"] - totals0["coalesced"],
    }


def poll_case(bridge: MainProcess, host_path: str, pid: int, clients: int, procs: int,
              window: float) -> dict[str, Any]:
    settle(bridge)
    before = rss_mb(pid)
    path = f"{host_path}/devices/{DEMO_DEVICE}/attributes/{ATTRIBUTE}/change?timeout=30000"
    # The upstream exists before the pollers come (a poll that starts it waits for a change).
    http("GET", bridge.base + path.replace("timeout=30000", "state=INITIAL"))
    sampler = Sampler(pid)
    results, start, end = run_clients("poll", bridge.port, path, clients, procs, window, sampler)
    settle(bridge)
    after = rss_mb(pid)
    return {
        "clients": clients, "procs": len(results),
        "deliveries": sum(len(r["delays"]) for r in results),
        "seconds": end - start,
        "delays": [d for r in results for d in r["delays"]],
        "latencies": [d for r in results for d in r["latencies"]],
        "cpu": sampler.cpu, "client_cpu": sum(r["cpu"] for r in results) / (end - start) * 100,
        "rss": (before, sampler.rss, after),
        "ended": sum(r["ended"] for r in results),
        "errors": [e for r in results for e in r["errors"]],
    }


# -- report ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,100,1000",
                        help="SSE client counts, comma-separated")
    parser.add_argument("--pollers", type=int, default=200, help="long-polling clients (0: none)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per case")
    parser.add_argument("--procs", type=int, default=2,
                        help="client processes (at most one per client)")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",") if c.strip()]

    # 1000 sockets in the client processes and 1000 in the worker: raise the soft limit; the
    # bridge (started from here) and the client processes inherit it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(counts + [args.pollers]) + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(wanted, soft)), hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    workdir = Path(f"/tmp/mtango-bench-live-{time.time_ns()}")
    workdir.mkdir()
    system = start_tango_demo(workdir)
    device_pid = system.servers[DEMO_SERVER].managed.process.pid
    bridge = MainProcess(["--workers", "1", "--tango-host", system.tango_host],
                         child_env(MTANGO_EVENTS_LINGER_S=str(LINGER_S)), workdir / "bridge.log")
    errors = 0
    try:
        bridge.wait_ready()
        pid = worker_pid(bridge)
        host_path = f"/tango/rest/rc3/hosts/{system.db_host}/{system.db_port}"
        target = {"host": system.tango_host, "device": DEMO_DEVICE, "attribute": ATTRIBUTE,
                  "type": "change"}
        # Warm-up: the worker's first subscription (imports, the device proxy) is not measured.
        sse_case(bridge, target, pid, 1, 1, 2.0)

        dev_cpu0, t0 = cpu_seconds(device_pid), time.time()
        direct = direct_client(system.trl(DEMO_DEVICE), args.window)
        device_cpu = (cpu_seconds(device_pid) - dev_cpu0) / (time.time() - t0) * 100
        cases = []
        for clients in counts:
            procs = max(1, min(args.procs, clients))
            cases.append(sse_case(bridge, target, pid, clients, procs, args.window))
        polled = (poll_case(bridge, host_path, pid, args.pollers, max(1, min(args.procs,
                  args.pollers)), args.window) if args.pollers else None)
    finally:
        bridge.stop()
        system.stop()

    p99_direct = percentile(direct["delays"], 99)
    print(f"Live values benchmark: {ATTRIBUTE} of {DEMO_DEVICE} pushed at {RATE_HZ:.0f} Hz "
          f"(demo device server), bridge main.py --workers 1, {args.window:.0f} s per case; "
          f"{os.cpu_count()} cores shared by the device server, the bridge worker and the client "
          f"processes; open files limit {nofile}")
    print(f"{'':30}{'deliv/s':>9} {'ideal':>7} {'share':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'p99/direct':>10} {'worker CPU':>10} {'clients CPU':>11}   worker RSS MB "
          "before/during/after")
    rate = direct["deliveries"] / direct["seconds"]
    print(f"{'direct PyTango client':30}{rate:9.1f} {RATE_HZ:7.0f} {rate / RATE_HZ:6.0%} "
          f"{percentile(direct['delays'], 50):7.1f} {p99_direct:7.1f} {1:10.1f} "
          f"{'':>10} {'':>11}   (device server CPU {device_cpu:.0f}%)")

    def row(label: str, case: dict) -> None:
        rate = case["deliveries"] / case["seconds"]
        ideal = case["clients"] * RATE_HZ
        p99 = percentile(case["delays"], 99)
        before, during, after = case["rss"]
        print(f"{label:30}{rate:9.0f} {ideal:7.0f} {rate / ideal:6.0%} "
              f"{percentile(case['delays'], 50):7.1f} {p99:7.1f} {p99 / p99_direct:10.1f} "
              f"{case['cpu']:9.0f}% {case['client_cpu']:10.0f}%   "
              f"{before:.0f}/{during:.0f}/{after:.0f} (after = {after / before:.2f}x before)")

    for case in cases:
        row(f"SSE, {case['clients']} clients ({case['procs']} procs)", case)
        notes = []
        if case["coalesced"]:
            notes.append(f"{case['coalesced']} events coalesced in full queues")
        if case["ended"]:
            notes.append(f"{case['ended']} streams ended by the server")
        if case["errors"]:
            notes.append(f"client errors: {case['errors'][:3]}")
            errors += 1
        if notes:
            print("    " + "; ".join(notes))
    if polled is not None:
        row(f"long poll, {polled['clients']} ({polled['procs']} procs)", polled)
        lat = polled["latencies"]
        print(f"    request latency (sent to answered) p50 {percentile(lat, 50):.0f} ms, "
              f"p99 {percentile(lat, 99):.0f} ms, mean {statistics.fmean(lat):.0f} ms; "
              f"{polled['ended']} failure answers")
        if polled["errors"]:
            print(f"    client errors: {polled['errors'][:3]}")
            errors += 1
    print("delay = client's wall time at reception - the event's timestamp (set by the device "
          "when it pushes); the SSE id is that timestamp in whole ms. SSE clients of a case share "
          "one subscription id, each with its own event stream (one hub listener each).")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
