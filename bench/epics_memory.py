"""EPICS memory benchmark: a worker's RSS before, during and after many distinct unknown PV names.

Run ``.venv/bin/python bench/epics_memory.py [--names 50000]``. Everything is measured in this run:

1. A caproto demo IOC starts on a free loopback port; the bridge runs as ``main.py --workers 1``
   with that address, short connect timeout and ``epics_dead_timeout`` (channels of names nobody
   answers are given up after it).
2. Warm-up: known PVs and two rounds of 1000 unknown names; once they are given up, the worker's
   RSS is the baseline.
3. ``--names`` distinct unknown names, 1000 per ``POST /epics/rest/v1/pvs/value``; then the
   bridge is left alone until every channel is given up.

Printed: RSS at the baseline, at the peak and after the release, and the release figure as a
ratio of the baseline. Target (issue 8): back near the baseline (the issue measured 120 MB growing
to 437 MB after 120,000 names before the fix).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtango.demo.ioc import start_ioc  # noqa: E402
from tests.bridge import MainProcess, child_env, poll  # noqa: E402

DEAD_TIMEOUT = 2.0


def post(base: str, names: list[str]) -> list[dict]:
    request = urllib.request.Request(
        f"{base}/epics/rest/v1/pvs/value", data=json.dumps(names).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def worker_rss(bridge: MainProcess) -> float:
    stats = bridge.get("/tango/rest/sys/stats").json()
    return stats["resource"]["rss_bytes"] / 2**20


def channels(bridge: MainProcess) -> int:
    return bridge.get("/epics/rest/v1/health").json()["channels"]["total"]


def settle(bridge: MainProcess) -> None:
    poll("unknown names given up", lambda: channels(bridge) <= 2, timeout=120)  # 2 known PVs stay
    time.sleep(2 * DEAD_TIMEOUT)  # the reap after the last release collects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=50_000)
    args = parser.parse_args()
    workdir = Path(f"/tmp/mtango-bench-memory-{time.time_ns()}")
    workdir.mkdir()
    ioc = start_ioc("caproto", prefix="mem:", workdir=workdir)
    env = child_env(
        TANGO_HOST="127.0.0.1:1",  # never contacted: only EPICS is asked
        EPICS_CA_ADDR_LIST=ioc.address, MTANGO_EPICS_CONNECT_TIMEOUT_MS="300",
        MTANGO_EPICS_DEAD_TIMEOUT=str(DEAD_TIMEOUT), MTANGO_EPICS_MAX_SEARCHING="20000")
    bridge = MainProcess(["--workers", "1"], env, workdir / "bridge.log")
    try:
        bridge.wait_ready("/health/live")
        post(bridge.base, [ioc.pv("double"), ioc.pv("counter")])
        for round_ in range(2):
            post(bridge.base, [f"warmup:{round_}:{i}" for i in range(1000)])
        settle(bridge)
        baseline = worker_rss(bridge)
        peak = baseline
        started = time.monotonic()
        refused = 0
        for start in range(0, args.names, 1000):
            items = post(bridge.base, [f"unknown:{n}" for n in range(start, start + 1000)])
            refused += sum(i["errors"][0]["reason"] == "EPICS_TOO_MANY_SEARCHES" for i in items)
            peak = max(peak, worker_rss(bridge))
        spent = time.monotonic() - started
        settle(bridge)
        after = worker_rss(bridge)
        print(f"{args.names} distinct unknown PV names, 1000 a request, in {spent:.0f} s "
              f"({refused} refused by epics_max_searching)")
        print(f"worker RSS: baseline {baseline:.0f} MB, peak {peak:.0f} MB, "
              f"after release {after:.0f} MB ({after / baseline:.2f}x the baseline)")
    finally:
        bridge.stop()
        ioc.stop()


if __name__ == "__main__":
    main()
