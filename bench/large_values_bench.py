"""Large values benchmark: MB/s of JSON out for a 1,000,000-element spectrum and a 1000x1000 image.

Run ``.venv/bin/python bench/large_values_bench.py [--repeat 5]``. Everything is measured in this
one run, on this machine:

1. The demo Tango stack starts (``sys/tg_test/1`` has ``big_spectrum``: 1,000,000 doubles,
   ``big_nan_spectrum``: the same with every 1000th element NaN and two infinities, and
   ``big_image``: 1000x1000 doubles), then the bridge as ``main.py --workers 1`` against it.
2. Bound: numpy's own ``tobytes()`` of each value (8 MB of raw doubles), in MB/s of bytes out.
3. Serializer: each attribute read with a ``DeviceProxy`` and turned into the value object the
   bridge answers (``mtango.tango.convert.value_object``), then through ``jsonenc.dumps_bytes``
   (what ``json_response`` sends): MB/s of JSON out (JSON bytes / seconds; a double is ~20
   bytes of JSON against 8 raw). Also through ``jsonenc._reference_dumps``, the former
   serializer (``tolist()`` + ``json.dumps``) kept as the fast path's reference: "before".
4. HTTP: ``GET .../attributes/{name}/value`` through the running bridge, the whole body read:
   MB/s of JSON received (the Tango read of 8 MB is part of it, as it is for any client).

Each figure is the best of ``--repeat`` runs. Ratios are to the ``tobytes()`` rate of the same
value. Target (issue): JSON at 0.25 or more of ``tobytes()``, strict JSON kept (NaN as "NaN").

Figures on the development machine (2 cores shared with other work; tobytes() varies 27-51 GB/s
from run to run). Before = ``tolist()`` + ``json.dumps`` (today ``jsonenc._reference_dumps``; its
HTTP figures from a run before the change, best of 3); after = orjson writing the arrays,
NaN/infinities replaced in the array's JSON. MB/s of JSON out (ratio to tobytes()), best of 7:

    value                 tobytes()  serializer before   after          HTTP before  after
    1M spectrum           41,000     48 (0.0012)         1,173 (0.029)  41 (0.0015)  510 (0.012)
    1000x1000 image       51,000     46 (0.0009)         1,149 (0.023)  43 (0.0014)  499 (0.010)
    1M spectrum, NaN 0.1% 48,000     31 (0.0006)           528 (0.011)  38 (0.0018)  363 (0.008)

    ms per value: serializer 409 -> 17 (spectrum), 428 -> 17 (image), 642 -> 37 (NaN);
    HTTP GET 477 -> 38.5, 453 -> 39, 518 -> 54; the Tango read of the 8 MB alone: 1.5 ms.

The target ratio of 0.25 is not reached: tobytes() is a memory copy of 8 bytes per double; JSON
is ~20 bytes of decimal text per double, and py-spy on the worker during these GETs shows it
busy in orjson's own float formatting (before: 81 % of the serializer's time in json's encoder).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tango  # noqa: E402

from mtango import jsonenc  # noqa: E402
from mtango.demo import DEMO_DEVICE, start_tango_demo  # noqa: E402
from mtango.tango import convert  # noqa: E402
from tests.bridge import MainProcess, child_env, http  # noqa: E402

ATTRIBUTES = ["big_spectrum", "big_image", "big_nan_spectrum"]
MB = 1e6


def best(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    """The shortest time of ``repeat`` runs of ``run`` and the byte count it returned."""
    times, size = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        size = run()
        times.append(time.perf_counter() - t0)
    return min(times), size


def serialize(value: Any) -> bytes:
    dumps_bytes = getattr(jsonenc, "dumps_bytes", None)  # before: only dumps (str) existed
    if dumps_bytes is not None:
        return dumps_bytes(value)
    return jsonenc.dumps(value).encode("utf-8")


def measure(proxy: tango.DeviceProxy, name: str, url: str, repeat: int) -> list[tuple[Any, ...]]:
    da = proxy.read_attribute(name)
    raw = da.value
    body = convert.value_object(da)
    t_raw, n_raw = best(repeat, lambda: len(raw.tobytes()))
    t_ser, n_ser = best(repeat, lambda: len(serialize(body)))
    reference = getattr(jsonenc, "_reference_dumps", None)  # tolist() + json.dumps
    t_ref, n_ref = (0.0, 0) if reference is None else best(
        min(repeat, 3), lambda: len(reference(body).encode("utf-8")))
    t_read, _ = best(repeat, lambda: proxy.read_attribute(name).value.size)

    def get() -> int:
        reply = http("GET", url, timeout=120)
        assert reply.status == 200, (reply.status, reply.body[:300])
        assert b"NaN" not in reply.body or b'"NaN"' in reply.body
        return len(reply.body)

    get()  # warm-up: the worker's device proxy, the attribute's info
    t_http, n_http = best(repeat, get)
    bound = n_raw / t_raw / MB
    rows: list[tuple[Any, ...]] = [(f"{name} tobytes() (bound)", bound, 1.0, n_raw)]
    measured = [("jsonenc", t_ser, n_ser), ("HTTP GET", t_http, n_http)]
    if n_ref:
        measured.insert(0, ("reference (before)", t_ref, n_ref))
    for label, t, n in measured:
        rate = n / t / MB
        rows.append((f"{name} {label}", rate, rate / bound, n))
    rows.append((f"{name} ms: Tango read, reference, jsonenc, HTTP",
                 t_read * 1000, t_ref * 1000, t_ser * 1000, t_http * 1000))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (best is kept)")
    args = parser.parse_args()

    workdir = Path(f"/tmp/mtango-bench-large-{time.time_ns()}")
    workdir.mkdir()
    system = start_tango_demo(workdir)
    bridge = MainProcess(["--workers", "1", "--tango-host", system.tango_host], child_env(),
                         workdir / "bridge.log")
    rows: list[tuple[Any, ...]] = []
    try:
        bridge.wait_ready()
        proxy = tango.DeviceProxy(system.trl(DEMO_DEVICE))
        host_path = f"/tango/rest/rc3/hosts/{system.db_host}/{system.db_port}"
        for name in ATTRIBUTES:
            url = f"{bridge.base}{host_path}/devices/{DEMO_DEVICE}/attributes/{name}/value"
            rows.extend(measure(proxy, name, url, args.repeat))
    finally:
        bridge.stop()
        system.stop()

    print(f"{'case':44} {'MB/s':>10} {'ratio':>8} {'bytes':>12}")
    for label, *figures in rows:
        if label.endswith("HTTP"):
            print(f"{label:44} " + " / ".join(f"{ms:.1f}" for ms in figures))
        else:
            rate, ratio, size = figures
            print(f"{label:44} {rate:10.1f} {ratio:8.4f} {size:12d}")
    print("ratio = MB/s of JSON out / MB/s of tobytes() of the same array (best of "
          f"{args.repeat}); HTTP includes the bridge's Tango read of the 8 MB value.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
