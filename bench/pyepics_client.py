"""pyepics ``caget_many`` of PV names, for bench/suite.py (case 9); runs in the pyepics venv.

``python pyepics_client.py WARM_SECONDS < names.json`` (a JSON list of PV names on stdin;
EPICS_CA_ADDR_LIST and EPICS_CA_AUTO_ADDR_LIST=NO in the environment). The first
``caget_many`` of this fresh process is the cold read (a fresh libca context: search, connect,
read); then ``caget_many`` again and again for WARM_SECONDS (0: none), each one timed. Prints
one JSON object: ``cold_s``, ``warm_s`` (a list), ``sum`` (of the cold values, for the suite to
check), ``missing`` (names without a value), ``version``.
"""

from __future__ import annotations

import json
import sys
import time

import epics


def main() -> None:
    warm_seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    names = json.load(sys.stdin)
    start = time.perf_counter()
    values = epics.caget_many(names, timeout=5, connection_timeout=5)
    cold = time.perf_counter() - start
    missing = sum(v is None for v in values)
    warm: list[float] = []
    end = time.perf_counter() + warm_seconds
    while warm_seconds and (time.perf_counter() < end or not warm):
        sent = time.perf_counter()
        again = epics.caget_many(names, timeout=5, connection_timeout=5)
        warm.append(time.perf_counter() - sent)
        missing = max(missing, sum(v is None for v in again))
    print(json.dumps({"cold_s": cold, "warm_s": warm, "missing": missing,
                      "sum": float(sum(v for v in values if v is not None)),
                      "version": epics.__version__}))


if __name__ == "__main__":
    main()
