"""HTTP load generators for the benchmark suite: ``wrk`` when it is on PATH, else one on aiohttp.

Both load one URL with N keep-alive connections for a fixed duration and report the same figures:
``{"requests", "seconds", "rps", "p50_ms", "p90_ms", "p99_ms", "non2xx", "errors", "sample"}``
(``sample``: the status and start of the body of the first non-2xx answer, or of an error).
``non2xx`` also counts 2xx answers whose body lacks the spec's ``expect`` text (a GraphQL error
answered 200, an HTML page instead of JSON).

The aiohttp one runs in a process of its own (``python bench/loadgen.py SPEC_JSON``), so that it
shares no interpreter with the suite's other threads; it counts every answer, keeps every latency
and reads every body to the end, as a client would.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- aiohttp --------------------------------------------------------------------------------------


async def _aiohttp_load(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    url, method = spec["url"], spec.get("method", "GET")
    body = spec.get("body")
    data = body.encode() if body is not None else None
    headers = spec.get("headers") or {}
    expect = spec.get("expect", "").encode()
    connections, duration = int(spec["connections"]), float(spec["duration"])
    latencies: list[float] = []
    counts = {"non2xx": 0, "errors": 0}
    sample: list[str] = []
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        end = start + duration

        async def client() -> None:
            while True:
                sent = time.perf_counter()
                if sent >= end:
                    return
                try:
                    async with session.request(method, url, data=data, headers=headers) as reply:
                        content = await reply.read()
                        done = time.perf_counter()
                        if not 200 <= reply.status < 300 or expect not in content:
                            counts["non2xx"] += 1
                            if not sample:
                                sample.append(f"HTTP {reply.status}: {content[:300]!r}")
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    counts["errors"] += 1
                    if not sample:
                        sample.append(repr(exc))
                    continue
                latencies.append((done - sent) * 1000)

        await asyncio.gather(*(client() for _ in range(connections)))
        seconds = time.perf_counter() - start
    return {
        "tool": "aiohttp",
        "requests": len(latencies) + counts["non2xx"],
        "seconds": seconds,
        "rps": (len(latencies) + counts["non2xx"]) / seconds,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "non2xx": counts["non2xx"],
        "errors": counts["errors"],
        "sample": sample[0] if sample else "",
    }


def aiohttp_load(spec: dict[str, Any], python: str = sys.executable) -> dict[str, Any]:
    done = subprocess.run([python, __file__, json.dumps(spec)], capture_output=True, text=True,
                          timeout=float(spec["duration"]) + 120)
    if done.returncode:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- wrk ------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_LUA = """
wrk.method = {method}
{body}
{headers}
local expect = {expect}
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end
unexpected = 0
function response(status, headers, body)
  if status >= 200 and status < 300 and not string.find(body, expect, 1, true) then
    unexpected = unexpected + 1
  end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("unexpected")
  end
  io.write(string.format("Unexpected bodies: %d\\n", total))
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk_load(spec: dict[str, Any], wrk: str = "wrk") -> dict[str, Any]:
    connections, duration = int(spec["connections"]), float(spec["duration"])
    headers = "\n".join(f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}"
                        for k, v in (spec.get("headers") or {}).items())
    body = spec.get("body")
    script = _LUA.format(method=_lua_string(spec.get("method", "GET")),
                         body=f"wrk.body = {_lua_string(body)}" if body is not None else "",
                         headers=headers, expect=_lua_string(spec.get("expect", "")))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        path = handle.name
    try:
        threads = max(1, min(2, connections))
        done = subprocess.run(
            [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
             "--latency", "--timeout", "60s", "-s", path, spec["url"]],
            capture_output=True, text=True, timeout=duration + 120)
    finally:
        Path(path).unlink()
    out = done.stdout
    if done.returncode:
        raise RuntimeError(f"wrk failed: {done.stderr[-2000:]}{out[-2000:]}")
    requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out).group(1))  # type: ignore
    seconds_match = re.search(r"requests in ([\d.]+\w+)", out)
    seconds = _ms(seconds_match.group(1)) / 1000 if seconds_match else duration
    pct = {int(p): _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M)}
    non2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors_match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(g) for g in errors_match.groups()) if errors_match else 0
    non2xx = int(non2xx_match.group(1)) if non2xx_match else 0
    unexpected_match = re.search(r"Unexpected bodies: (\d+)", out)
    if not unexpected_match:
        raise RuntimeError(f"wrk: its script did not report: {out[-2000:]}")
    non2xx += int(unexpected_match.group(1))  # a 2xx answer without the expected text
    return {
        "tool": "wrk",
        "requests": requests,
        "seconds": seconds,
        "rps": requests / seconds,
        "p50_ms": pct.get(50, float("nan")),
        "p90_ms": pct.get(90, float("nan")),
        "p99_ms": pct.get(99, float("nan")),
        "non2xx": non2xx,
        "errors": errors,
        "sample": (out.strip().splitlines()[-1] if non2xx or errors else ""),
    }


def load(spec: dict[str, Any], tool: str = "auto") -> dict[str, Any]:
    """``spec``: url, connections, duration, and optionally method, body (text), headers, expect
    (a text every 2xx body must contain)."""
    wrk = shutil.which("wrk")
    if tool == "wrk" or (tool == "auto" and wrk):
        if not wrk:
            raise RuntimeError("--loadgen wrk: wrk is not on PATH")
        return wrk_load(spec, wrk)
    return aiohttp_load(spec)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_aiohttp_load(json.loads(sys.argv[1])))))
