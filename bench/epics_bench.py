"""EPICS benchmark: batch reads against pyepics, and a monitored PV against a trivial endpoint.

Run ``.venv/bin/python bench/epics_bench.py`` (needs the ``test`` extra: softioc, pyepics).
Everything is measured in this one run, on this machine, against baselines measured the same way:

1. A softioc IOC (EPICS base records) with 1000 ai records starts on a free loopback port.
2. The bridge runs as ``main.py --workers 1`` in its own process, configured with that address.
3. A read of all 1000 PVs in one ``POST /epics/rest/v1/pvs/value``: cold (the first request of a
   freshly started bridge: search, connect, read; ``--cold-runs`` times, each with a new bridge)
   and warm (channels and monitors up), next to pyepics ``caget_many`` of the same PVs, cold (in
   a fresh process each time) and warm (its second call).
4. Reads per second of one monitored PV next to the bridge's trivial JSON endpoint
   (``GET /epics/rest/v1``), same load generator, same connections, same duration.

Targets (issue 3): 1000 PVs cold in under 0.4 s and warm in under 40 ms; a monitored PV at 70% or
more of the trivial endpoint's rate. The load generator shares the machine's cores with the bridge
and the IOC, so absolute rates are this machine's; the ratios are what compare.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtango.demo.ioc import start_ioc  # noqa: E402
from mtango.demo.stack import clean_env, free_port, wait_until  # noqa: E402

V1 = "/epics/rest/v1"


def start_bridge(address: str, workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = open(workdir / "bridge.log", "wb")  # noqa: SIM115 - lives as long as the process
    # No Tango request is made: the Tango host is never contacted (and no Tango demo starts).
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--tango-host", "127.0.0.1:1", "--epics-ca-addr-list", address],
        env=clean_env(), cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )

    def ready() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", V1)
        return conn.getresponse().status == 200

    wait_until(ready, 60, "bridge", process)
    return process, port


def post_names(conn: http.client.HTTPConnection, names: list[str]) -> tuple[float, list]:
    body = json.dumps(names)
    start = time.perf_counter()
    conn.request("POST", f"{V1}/pvs/value", body, {"Content-Type": "application/json"})
    items = json.loads(conn.getresponse().read())
    return time.perf_counter() - start, items


def get_json(conn: http.client.HTTPConnection, path: str) -> dict:
    conn.request("GET", path)
    return json.loads(conn.getresponse().read())


def bridge_cold(port: int, names: list[str]) -> float:
    """The first request of a fresh worker: search, circuit, channels, reads."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    cold, items = post_names(conn, names)
    assert sum("value" in i for i in items) == len(names), "cold read incomplete"
    conn.close()
    return cold


def bridge_warm(port: int, names: list[str], repeats: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.monotonic() + 30
    while get_json(conn, f"{V1}/health")["channels"]["monitored"] < len(names):
        if time.monotonic() > deadline:
            raise RuntimeError("monitors did not come up")
        time.sleep(0.05)
    warm = []
    for _ in range(repeats):
        elapsed, items = post_names(conn, names)
        assert sum("value" in i for i in items) == len(names), "warm read incomplete"
        warm.append(elapsed)
    conn.close()
    return statistics.median(warm)


_PYEPICS_COLD = """
import json, sys, time, epics
names = json.load(sys.stdin)
start = time.perf_counter()
values = epics.caget_many(names, timeout=5, connection_timeout=5)
elapsed = time.perf_counter() - start
assert all(v is not None for v in values), "pyepics cold read incomplete"
print(elapsed)
"""


def pyepics_cold(address: str, names: list[str]) -> float:
    """``caget_many`` in a fresh process: a fresh libca context, as the bridge's fresh worker."""
    env = dict(clean_env(), EPICS_CA_ADDR_LIST=address, EPICS_CA_AUTO_ADDR_LIST="NO")
    done = subprocess.run(
        [sys.executable, "-c", _PYEPICS_COLD], input=json.dumps(names), env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )
    return float(done.stdout.split()[-1])


def pyepics_warm(address: str, names: list[str], repeats: int) -> float:
    os.environ.update(EPICS_CA_ADDR_LIST=address, EPICS_CA_AUTO_ADDR_LIST="NO")
    import epics

    values = epics.caget_many(names, timeout=5, connection_timeout=5)
    assert all(v is not None for v in values), "pyepics read incomplete"
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        values = epics.caget_many(names, timeout=5, connection_timeout=5)
        warm.append(time.perf_counter() - start)
    return statistics.median(warm)


async def _client(port: int, request: bytes, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
            counts[0] += 1
    finally:
        writer.close()


def rate(port: int, path: str, connections: int, seconds: float) -> float:
    """Requests per second over keep-alive connections (a minimal HTTP/1.1 client)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    async def run(duration: float) -> float:
        counts = [0]
        start = time.perf_counter()
        stop_at = start + duration
        await asyncio.gather(*(_client(port, request, stop_at, counts)
                               for _ in range(connections)))
        return counts[0] / (time.perf_counter() - start)

    asyncio.run(run(0.5))  # warm-up: connections, caches, the JIT-free Python paths
    return asyncio.run(run(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pvs", type=int, default=1000)
    parser.add_argument("--cold-runs", type=int, default=5,
                        help="cold batch reads, each by a freshly started bridge (and pyepics)")
    parser.add_argument("--repeats", type=int, default=5, help="warm batch reads (median)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mtango-bench-"))
    ioc = start_ioc("softioc", prefix="bench:", bulk=args.pvs, workdir=workdir)
    names = ioc.bulk_names()
    cold, py_cold = [], []
    bridge = None
    try:
        for _ in range(args.cold_runs):
            if bridge is not None:
                bridge.terminate()
                bridge.wait(20)
            bridge, port = start_bridge(ioc.address, workdir)
            cold.append(bridge_cold(port, names))
            py_cold.append(pyepics_cold(ioc.address, names))
        warm = bridge_warm(port, names, args.repeats)
        trivial = rate(port, V1, args.connections, args.seconds)
        monitored = rate(port, f"{V1}/pvs/{names[0]}/value", args.connections, args.seconds)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        reads = get_json(conn, f"{V1}/health")["reads"]
        py_warm = pyepics_warm(ioc.address, names, args.repeats)
    finally:
        if bridge is not None:
            bridge.terminate()
            bridge.wait(20)
        ioc.stop()
    share = monitored / trivial
    print(f"EPICS benchmark: softioc IOC with {args.pvs} ai records, bridge with 1 worker; "
          f"{os.cpu_count()} cores shared by IOC, bridge and load generator")
    print(f"batch read of {args.pvs} PVs       bridge    pyepics caget_many   target")
    median, py_median = statistics.median(cold), statistics.median(py_cold)
    over = sum(t >= 0.4 for t in cold)
    print(f"  cold, median of {len(cold)}      {median * 1000:7.0f} ms  {py_median * 1000:9.0f} ms"
          f"          < 400 ms  {'ok' if median < 0.4 else 'MISSED'}")
    print(f"    = {median / py_median:.1f} x pyepics; slowest {max(cold) * 1000:.0f} ms "
          f"(pyepics {max(py_cold) * 1000:.0f} ms); {over} of {len(cold)} runs at 400 ms or more")
    print("    each run (bridge/pyepics, ms): "
          + ", ".join(f"{b * 1000:.0f}/{p * 1000:.0f}" for b, p in zip(cold, py_cold, strict=True)))
    print(f"  warm (median of {args.repeats})       {warm * 1000:7.1f} ms  {py_warm * 1000:9.1f} ms"
          f"          <  40 ms  {'ok' if warm < 0.04 else 'MISSED'}")
    print(f"    = {warm / py_warm:.2f} x pyepics")
    print(f"reads/s, {args.connections} keep-alive connections, {args.seconds:.0f} s each")
    print(f"  trivial JSON endpoint    {trivial:8.0f}/s")
    print(f"  one monitored PV         {monitored:8.0f}/s  = {share:.0%} of trivial"
          f"      >= 70%    {'ok' if share >= 0.7 else 'MISSED'}")
    print(f"  bridge reads: {reads['cache']} from monitors, {reads['upstream']} upstream, "
          f"{reads['shared']} shared")


if __name__ == "__main__":
    main()
