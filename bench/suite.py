"""Benchmark suite: the bridge next to the peers users would pick instead (issue 12).

Run ``scripts/bench.sh [--rounds 3] [--duration 5] [--workers 1]`` (it sets up ``.venv`` first), or
``.venv/bin/python bench/suite.py ...``. Everything is measured in this one run, on this machine:

1. The demo Tango stack starts (``sys/tg_test/1``), then the bridge as ``main.py --workers N``.
2. Peers: TangoGQL (what Taranta uses) in a virtual environment of its own under
   ``--cache`` (``.bench/venvs/tangogql``: ``pip install tangogql uvicorn[standard]`` from the
   package registry the first time, reused after), run as Taranta does:
   ``uvicorn tangogql.main:app`` with ``TANGO_HOST`` set, the same worker count as the bridge,
   GraphQL at ``POST /db``. When it cannot be installed or started, the output and the JSON
   say why and its cases are skipped (the run fails: a peer that does not start is an error),
   unless ``--no-peers``.
3. Each case is loaded by a standard HTTP load generator (``wrk`` when on PATH, otherwise one on
   aiohttp in a process of its own: ``bench/loadgen.py``) with N keep-alive connections for
   ``--duration`` s. The cases run in alternation for ``--rounds`` rounds; the table shows the
   median of each figure over the rounds and each case's requests/s as a ratio to the baseline
   measured in the same run. Server CPU is the server's process tree (main process and workers),
   in % of one core, over the load.
4. Results go to ``bench/results/suite.json``. The exit status is non-zero only on errors (a
   non-2xx answer, a wrong answer, a peer that does not start), never on a figure.

Cases (a registry: later cases are functions decorated with ``@case``):

- ``baseline``: ``GET /tango/rest`` (the API root: a small JSON object built by the same server,
  through the same middleware, no control system call);
- ``direct``: PyTango reads of ``double_scalar`` from one process (asyncio green mode, 16 tasks);
- ``rc3 scalar``: ``GET .../attributes/double_scalar/value`` (read from the device every time),
  1 and 64 connections; the same through TangoGQL (``attributes(fullNames:) { value }``);
- ``rc3 multi``: ``GET .../attributes/value?attr=...`` of 10 attributes, 64 connections; the same
  through TangoGQL;
- ``rc3 cached``: ``double_scalar/value?max_age=60000`` while an mTango subscription's event stream
  on that attribute stays open in every worker (answers carry ``x-mtango-from-events``),
  64 connections.
- ``events_sse``, ``events_ws``, ``tangogql_events_few``, ``tangogql_events`` (case 8, events):
  ``--event-clients``
  clients (default 1100) of one value that changes about 10 times a second, in a process of
  their own (``bench/suite_events_client.py``: asyncio protocols, the WebSocket ones on the
  ``websockets`` package's sans-I/O protocol, parsing only the time stamp); once every client is
  connected and has had a first event, a window of ``--duration`` s. ``events_sse``: one mTango
  subscription (``POST /tango/subscriptions``) of ``pushed_counter`` (pushed by
  ``sys/tg_test/1`` every 100 ms as Tango change events), each client its own
  ``GET /tango/subscriptions/{id}/event-stream``. ``events_ws``: the bridge's only WebSocket,
  pvws (``/pvws/pv``), watches EPICS PVs only, so its clients watch the PV ``bench:fast`` of the
  suite's caproto demo IOC (a double written every 100 ms, about 9.8 changes/s), one
  ``subscribe`` each. ``tangogql_events``: TangoGQL's ``subscription { attributes(fullNames:
  ["sys/tg_test/1/pushed_counter"]) { device attribute value timestamp } }`` over its WebSocket
  ``/socket`` (subprotocol ``graphql-ws``, i.e. subscriptions-transport-ws: ``connection_init``,
  ``connection_ack``, ``start``, then ``data`` messages and ``ka`` keep-alives), one per
  connection; TangoGQL falls behind 1000 clients (its delay grows for as long as they stay, to
  seconds, and it takes 20 to 50 s to accept them), and already 200, so ``tangogql_events_few``
  measures it with 100 clients (``TANGOGQL_KEEPS_UP``), which it kept up with. The req/s
  column is deliveries/s in the window (all clients), p50/p99 the delay: reception wall time -
  the event's time stamp (the SSE ``id:``, the event's time in whole ms; pvws ``seconds``/
  ``nanos``; TangoGQL ``timestamp``); the note gives the source's rate (from the time stamps
  seen), the share of source rate x clients delivered, the deliveries within 100 ms per second
  and the client process's CPU. srv CPU: the bridge's (or TangoGQL's) processes. The memory
  case's IOC also starts for ``events_ws``.
- ``rc3_write_64``, ``rc3_command_64`` (case 7, writes):
  ``PUT .../attributes/long_scalar_w/value?v=7`` (a memory attribute nothing else reads) and
  ``PUT .../commands/DevDouble`` with body ``3.5``, 64 connections (wrk: a Lua script sets the
  method and body); the bridge runs with ``MTANGO_WRITES=on`` and ``MTANGO_AUDIT_LOG`` in the
  run's directory (auth none), and the audit lines written per second over the window are
  counted (every answered write must have its line); next to ``direct_write`` /
  ``direct_command``: PyTango ``write_attribute`` / ``command_inout`` from one process (asyncio
  green mode, 16 tasks).
- ``isolation`` (case 10): ``double_scalar/value`` at 100 reads/s on one keep-alive connection,
  first alone (unloaded p99), then while 16 clients read ``slow_scalar`` of ``test/slow/1``
  (a ``SlowDevice`` the suite adds to the demo server: 3 s per read) (loaded p99).
- ``large_spectrum``, ``large_image`` (case 6): ``GET .../attributes/big_spectrum/value`` (1,000,000
  doubles) and ``big_image/value`` (1000x1000 doubles, ~19.6 MB of JSON each) one after the other on
  one keep-alive connection for the duration, each body read whole (one connection: the worker
  writes one such value at a time anyway, its CPU the bound, and on 2 shared cores more client
  connections only add queueing and a client that competes for the cores). Figure: MB/s of JSON
  received, next to numpy's ``tobytes()`` MB/s of the same array (the physical bound: a memory
  copy), measured in the same round (0.5 s of calls); req/s is GETs per second. Once per case the
  body is parsed as strict JSON (``json.loads`` refusing NaN/Infinity literals) and its shape
  checked (1,000,000; an image's ``data`` of ``width`` x ``height`` 1000 x 1000).
- ``epics_pv_1``, ``epics_pv_64`` (case 9; the EPICS-side equivalent of ``rc3 scalar``):
  ``GET /epics/rest/v1/pvs/bench:double/value`` of the suite's caproto demo IOC (the same IOC as
  case 11; the PV is monitored after its first read, so reads answer from the monitor), 1 and 64
  connections.
- ``epics_1000_cold``, ``epics_1000_warm`` (case 9, after ``bench/epics_bench.py``): one
  ``POST /epics/rest/v1/pvs/value`` of 1000 PVs (``bench:bulk:0000``... of a softioc IOC with
  1000 ai records, ``mtango.demo.ioc``, started for these cases only), every value checked. These
  cases have a bridge of their own (``main.py --workers 1``, that IOC only): cold is the first
  request of a freshly started one (search, circuit, channels, reads; one a round, a new bridge
  each time); warm is POSTs one after the other for the duration once all 1000 are monitored
  (median). Next to pyepics ``caget_many`` of the same PVs, cold (the first call of a fresh
  process) and warm (calls after the first, for the duration; median): pyepics runs in a virtual
  environment of its own (``.bench/venvs/pyepics``, ``pip install pyepics``) as
  ``bench/pyepics_client.py`` with ``EPICS_CA_ADDR_LIST`` = the IOC, ``EPICS_CA_AUTO_ADDR_LIST=NO``.
  Figure: ms a 1000-PV read and the ratio bridge / pyepics (below 1: the bridge is faster); req/s
  is 1000-PV reads per second (1000 / the median ms).
- ``memory`` (case 11): the workers' RSS (``/proc/<pid>/status`` of the pids
  ``/tango/rest/sys/subscriptions`` names) after warm-up, then after 20,000 distinct unknown
  attributes (``.../attributes/nonexistent_NNNNN/value``, 16 connections; their FAILURE answers are
  expected) and 20,000 distinct unknown PVs (``POST /epics/rest/v1/pvs/value``, 1000 a request,
  against a caproto demo IOC the suite starts, connect timeout 300 ms, ``epics_dead_timeout``
  15 s). Each round uses new names and its ratio is to the RSS after warm-up (cumulative); then
  it waits until the unknown channels are given up (RSS after release, shown too), so that the
  cases after it do not share the worker with 20,000 searches.

Targets (issue 12, ratios of this run): rc3 scalar >= 0.8 x direct; every read >= 5 x TangoGQL;
rc3 cached >= 0.7 x baseline; isolation loaded p99 <= 2 x unloaded p99; large values: JSON MB/s >=
0.25 x ``tobytes()`` MB/s; EPICS monitored PV (64 conn) >= 0.7 x baseline; 1000 PVs cold <= 400 ms
and warm <= 40 ms (issue 3); memory RSS after <= 1.2 x RSS after warm-up; events: SSE >= 10,000
deliveries/s (per worker: the default is one), SSE and pvws p99 <= 100 ms, SSE and pvws
deliveries/s within 100 ms >= 5 x TangoGQL's with as many clients, and SSE >= 5 x TangoGQL with
100 clients (as many as it keeps up with). A target not met is reported, never an error.

Measured on the development machine (a 2-core x86_64 virtual machine, 24 GiB, shared by the demo
device server, the IOCs, the bridge, the peer and the load generator) at commit cd193f4,
``scripts/bench.sh --rounds 2 --duration 5``, wrk 4.1.0 (Debian's package), TangoGQL 2.3.0 on
uvicorn 0.54.0, pyepics 3.5.10, one worker each, load average 0.8 before and 1.3 after (the
README's "Performance" has the figures of the other runs of that day and the figures before the
work of issue 12):

case                                                          req/s  x base  p50 ms  p99 ms  srv CPU
baseline: GET /tango/rest, 64 conn                            14751    1.00    3.91   56.87     100%
direct PyTango client, asyncio, 16 tasks                      12446    0.84    1.18    3.24        -
rc3 double_scalar/value, 1 conn                                2310    0.16    0.40    1.54      75%
TangoGQL double_scalar value, 1 conn                            520    0.04    1.71   63.08      95%
rc3 double_scalar/value, 64 conn                              15608    1.06    3.81    7.68     100%
TangoGQL double_scalar value, 64 conn                           528    0.04  118.50  211.91     102%
rc3 10-attribute value read, 64 conn                           9449    0.64    6.34   12.05      98%
TangoGQL 10 attributes, 64 conn                                 202    0.01  308.10  617.34      96%
rc3 double_scalar/value?max_age=60000 (events), 64 conn        9599    0.65    6.44   31.27     100%
SSE subscription stream pushed_counter, 1100 clients          11000    0.75   22.42   45.05      34%
  source 9.95 events/s, 101% of that x clients delivered, 11000/s within 100 ms; client CPU 31%
pvws WebSocket, PV bench:fast (EPICS), 1100 clients           10914    0.74   30.08   77.48      46%
  source 9.86 events/s, 101% of that x clients delivered, 10914/s within 100 ms; client CPU 50%
TangoGQL subscription pushed_counter, 100 clients              1000    0.07   10.31   22.22      13%
  source 9.94 events/s, 101% of that x clients delivered, 1000/s within 100 ms; client CPU 7%
TangoGQL subscription pushed_counter, 1100 clients             6643    0.45 7603.95 8864.23     100%
  source 9.93 events/s, 61% of that x clients delivered, 0/s within 100 ms; client CPU 39%
rc3 PUT long_scalar_w/value?v=7 (audited), 64 conn             1420    0.10   44.25   68.44      90%
  audit 1417 lines/s
direct PyTango write_attribute, 16 tasks                       5957    0.40    2.52    7.03        -
rc3 PUT commands/DevDouble 3.5 (audited), 64 conn              1274    0.09   48.36  117.86     100%
  audit 1271 lines/s
direct PyTango command_inout, 16 tasks                         4877    0.33    3.06    8.28        -
rc3 double_scalar at 100/s, 16 on slow_scalar                   100    0.01    1.27    2.49        -
  unloaded p99 2.44 ms
rc3 big_spectrum/value (1,000,000 doubles), 1 conn               33    0.00   29.25   40.34      92%
  JSON 644 MB/s (19.6 MB a body); numpy tobytes() 46886 MB/s; ratio 0.0138
rc3 big_image/value (1000x1000 doubles), 1 conn                  33    0.00   29.68   39.61      92%
  JSON 641 MB/s (19.6 MB a body); numpy tobytes() 51677 MB/s; ratio 0.0124
EPICS bench:double (monitored) pvs/.../value, 1 conn           6281    0.43    0.15    0.81      73%
EPICS bench:double (monitored) pvs/.../value, 64 conn         11532    0.78    5.04   11.43     100%
EPICS 1000 PVs, one POST, cold (fresh bridge)                     5    0.00  189.70  189.70        -
  189.7 ms a read of 1000.0 PVs; pyepics caget_many 118.6 ms; bridge / pyepics 1.60
EPICS 1000 PVs, one POST, warm (monitored)                      121    0.01    8.96   13.44        -
  9.0 ms a read of 1000.0 PVs; pyepics caget_many 49.4 ms; bridge / pyepics 0.18
20000 unknown attributes + 20000 unknown PVs: RSS              1498    0.10    5.18   10.49        -
  worker RSS 222 -> 229 (attrs) -> 231 MB (1.04x); 231 MB once the PV channels are given up
targets (ratios of this run):
  rc3 scalar, 64 conn / direct PyTango client                1.25  (target >= 0.8) met
  rc3 scalar, 1 conn / TangoGQL                              4.44  (target >= 5) NOT met
  rc3 scalar, 64 conn / TangoGQL                            29.56  (target >= 5) met
  rc3 10-attribute read / TangoGQL                          46.68  (target >= 5) met
  rc3 read from events / baseline                            0.65  (target >= 0.7) NOT met
  healthy p99 with slow_scalar hammered / unloaded           1.02  (target <= 2) met
  worker RSS after 20k+20k unknown names / after warm-up     1.04  (target <= 1.2) met
  1M spectrum: JSON MB/s / tobytes() MB/s                  0.0138  (target >= 0.25) NOT met
  1000x1000 image: JSON MB/s / tobytes() MB/s              0.0124  (target >= 0.25) NOT met
  EPICS monitored PV, 64 conn / baseline                     0.78  (target >= 0.7) met
  EPICS 1000 PVs cold, ms                                  189.70  (target <= 400) met
  EPICS 1000 PVs warm, ms                                    8.96  (target <= 40) met
  SSE event deliveries/s                                   11000.00  (target >= 10000) met
  SSE event delay p99, ms                                   45.05  (target <= 100) met
  pvws (PV) event delay p99, ms                             77.48  (target <= 100) met
  SSE deliveries/s within 100 ms / TangoGQL's                 inf  (target >= 5) met
  pvws (PV) deliveries/s within 100 ms / TangoGQL's           inf  (target >= 5) met
  SSE deliveries/s / TangoGQL, 100 clients (keeps up)       11.00  (target >= 5) met
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import loadgen  # noqa: E402

from mtango.demo import DEMO_DEVICE, start_tango_demo  # noqa: E402
from mtango.demo.ioc import start_ioc  # noqa: E402
from tests.bridge import MainProcess, child_env, free_port, http, poll  # noqa: E402

SCALAR = "double_scalar"
MULTI = ["double_scalar", "float_scalar", "long_scalar", "long64_scalar", "ulong_scalar",
         "short_scalar", "ushort_scalar", "uchar_scalar", "boolean_scalar", "string_scalar"]
DIRECT_TASKS = 16
CLK_TCK = os.sysconf("SC_CLK_TCK")
TANGOGQL_SPEC = ["tangogql", "uvicorn[standard]"]


class BenchError(RuntimeError):
    """An error that fails the run (never a figure)."""


# -- processes ------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


# -- peers ----------------------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    url: str = ""
    pid: int = 0
    process: subprocess.Popen | None = None
    version: str = ""
    error: str = ""
    log: Path | None = None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def peer_venv(cache: Path, name: str, spec: list[str], check: str) -> Path:
    """A virtual environment of its own for a peer, installed from the registry once, reused."""
    venv = cache / "venvs" / name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-installed"
    want = " ".join(spec)
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        if subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0:
            return venv
    print(f"suite: installing {want} into {venv}", file=sys.stderr, flush=True)
    if not python.exists():
        done = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                              text=True)
        if done.returncode:
            raise BenchError(f"python -m venv {venv} failed: {done.stderr.strip()[-1000:]}")
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", *spec],
                          capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise BenchError(f"pip install {want} failed: {done.stderr.strip()[-1500:]}")
    check_run = subprocess.run([str(python), "-c", check], capture_output=True, text=True)
    if check_run.returncode:
        raise BenchError(f"{name} installed but does not import: {check_run.stderr[-1000:]}")
    stamp.write_text(want)
    return venv


def graphql(url: str, query: str, timeout: float = 20.0) -> Any:
    reply = http("POST", url, body={"query": query}, timeout=timeout,
                 headers={"Content-Type": "application/json"})
    if reply.status != 200:
        raise BenchError(f"TangoGQL answered HTTP {reply.status}: {reply.body[:300]!r}")
    answer = reply.json()
    if answer.get("errors"):
        raise BenchError(f"TangoGQL answered errors: {json.dumps(answer['errors'])[:300]}")
    return answer["data"]


def start_tangogql(cache: Path, tango_host: str, workers: int, workdir: Path) -> Peer:
    peer = Peer("tangogql")
    try:
        venv = peer_venv(cache, "tangogql", TANGOGQL_SPEC, "import tangogql.main, uvicorn")
        python = str(venv / "bin" / "python")
        peer.version = subprocess.run(
            [python, "-c", "from importlib.metadata import version as v; "
             "print('tangogql', v('tangogql'), 'uvicorn', v('uvicorn'))"],
            capture_output=True, text=True).stdout.strip()
        port = free_port()
        peer.url = f"http://127.0.0.1:{port}/db"
        peer.log = workdir / "tangogql.log"
        args = [python, "-m", "uvicorn", "tangogql.main:app", "--host", "127.0.0.1",
                "--port", str(port), "--no-access-log", "--log-level", "warning"]
        if workers > 1:
            args += ["--workers", str(workers)]
        # Its own working directory: TangoGQL reads config.json and logging.ini from there.
        rundir = workdir / "tangogql"
        rundir.mkdir()
        with open(peer.log, "wb") as out:
            peer.process = subprocess.Popen(args, cwd=rundir, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=child_env(TANGO_HOST=tango_host))
        peer.pid = peer.process.pid
        deadline = time.monotonic() + 60
        while True:
            if peer.process.poll() is not None:
                raise BenchError(f"uvicorn tangogql.main:app exited "
                                 f"({peer.process.returncode}): {peer.log.read_text()[-1500:]}")
            try:
                if graphql(peer.url, "{ tangoHost }", timeout=2)["tangoHost"]:
                    break
            except (OSError, BenchError):
                if time.monotonic() > deadline:
                    raise BenchError(f"TangoGQL did not answer within 60 s: "
                                     f"{peer.log.read_text()[-1500:]}") from None
                time.sleep(0.2)
    except BenchError as exc:
        peer.error = str(exc)
        peer.stop()
    except Exception as exc:  # noqa: BLE001 - said in the output, not a traceback
        peer.error = f"{type(exc).__name__}: {exc}"
        peer.stop()
    return peer


# -- the context and the case registry ------------------------------------------------------------


@dataclass
class Ctx:
    args: argparse.Namespace
    bridge: MainProcess
    host_path: str  # /tango/rest/rc3/hosts/{host}/{port}
    tango_host: str
    trl: str  # tango://host:port/sys/tg_test/1
    peers: dict[str, Peer]
    bridge_pids: list[int] = field(default_factory=list)
    workdir: Path = Path("/tmp")
    epics: bool = False  # the bridge has an IOC to ask (EPICS_CA_ADDR_LIST)
    warmup: bool = False  # the 1 s warm-up pass (cases may do less)

    def device_url(self, rest: str, device: str = DEMO_DEVICE) -> str:
        return f"{self.bridge.base}{self.host_path}/devices/{device}/{rest}"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"


@dataclass
class Case:
    key: str
    label: str
    run: Callable[[Ctx], dict[str, Any]]
    peer: str = ""  # the peer it needs ("" : the bridge only)
    setup: Callable[[Ctx], None] | None = None


CASES: list[Case] = []


def case(key: str, label: str, peer: str = "",
         setup: Callable[[Ctx], None] | None = None) -> Callable[[Callable], Callable]:
    def register(function: Callable[[Ctx], dict[str, Any]]) -> Callable:
        CASES.append(Case(key, label, function, peer, setup))
        return function
    return register


def http_load(ctx: Ctx, url: str, connections: int, pids: list[int],
              method: str = "GET", body: str | None = None,
              headers: dict[str, str] | None = None, expect: str = "") -> dict[str, Any]:
    """Load ``url``; every answer must be 2xx with ``expect`` in its body."""
    spec = {"url": url, "connections": connections, "duration": ctx.args.duration,
            "method": method, "body": body, "headers": headers or {}, "expect": expect}
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    result = loadgen.load(spec, ctx.args.loadgen)
    result["server_cpu"] = (cpu_seconds(pids) - cpu0) / (time.monotonic() - t0) * 100
    result["server_rss_mb"] = rss_mb(pids)
    result["connections"] = connections
    if result["non2xx"] or result["errors"]:
        raise BenchError(f"{url}: {result['non2xx']} non-2xx answers, {result['errors']} "
                         f"errors of {result['requests']}; first: {result['sample']}")
    return result


def check_value(reply_body: Any, what: str) -> None:
    items = reply_body if isinstance(reply_body, list) else [reply_body]
    for item in items:
        if not isinstance(item, dict) or "value" not in item or item.get("quality") == "FAILURE":
            raise BenchError(f"{what}: not a value: {json.dumps(item)[:300]}")


def bridge_get(ctx: Ctx, url: str, connections: int, expect: str = '"value"') -> dict[str, Any]:
    reply = http("GET", url)
    if reply.status != 200 or expect.encode() not in reply.body:
        raise BenchError(f"{url}: HTTP {reply.status} {reply.body[:300]!r}")
    return http_load(ctx, url, connections, ctx.bridge_pids, expect=expect)


def tangogql_query(names: list[str]) -> str:
    names_json = json.dumps(names)
    query = f"query {{ attributes(fullNames: {names_json}) {{ name value }} }}"
    return json.dumps({"query": query})


def tangogql_load(ctx: Ctx, names: list[str], connections: int) -> dict[str, Any]:
    peer = ctx.peers["tangogql"]
    body = tangogql_query(names)
    data = graphql(peer.url, json.loads(body)["query"])
    values = data["attributes"]
    if len(values) != len(names) or any(v is None or v["value"] is None for v in values):
        raise BenchError(f"TangoGQL: not every value: {json.dumps(values)[:300]}")
    return http_load(ctx, peer.url, connections, descendants(peer.pid), method="POST", body=body,
                     headers={"Content-Type": "application/json"}, expect='"value":')


# -- cases ----------------------------------------------------------------------------------------


@case("baseline", "baseline: GET /tango/rest, 64 conn")
def baseline(ctx: Ctx) -> dict[str, Any]:
    return bridge_get(ctx, ctx.bridge.base + "/tango/rest", 64, expect='"rc3"')


_DIRECT = """
import asyncio, json, sys, time
from tango.asyncio import DeviceProxy
trl, attribute, tasks, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
mode = sys.argv[5] if len(sys.argv) > 5 else "read"
async def main():
    proxy = await DeviceProxy(trl)
    count = 0
    async def call():
        nonlocal count
        count += 1
        if mode == "write":
            await proxy.write_attribute(attribute, count % 1000)
        elif mode == "command":
            await proxy.command_inout(attribute, 3.5)
        else:
            await proxy.read_attribute(attribute)
    await call()
    latencies = []
    start = time.perf_counter()
    end = start + duration
    async def worker():
        while True:
            sent = time.perf_counter()
            if sent >= end:
                return
            await call()
            latencies.append((time.perf_counter() - sent) * 1000)
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return {"latencies": latencies, "seconds": time.perf_counter() - start}
print(json.dumps(asyncio.run(main())))
"""


def direct_client(ctx: Ctx, name: str, mode: str = "read") -> dict[str, Any]:
    """PyTango from one process (asyncio green mode, ``DIRECT_TASKS`` tasks): read or write the
    attribute ``name``, or call the command ``name`` with 3.5."""
    done = subprocess.run(
        [sys.executable, "-c", _DIRECT, ctx.trl, name, str(DIRECT_TASKS),
         str(ctx.args.duration), mode],
        env=child_env(), capture_output=True, text=True, timeout=ctx.args.duration + 120)
    if done.returncode:
        raise BenchError(f"direct PyTango client failed: {done.stderr[-1500:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    lat = out["latencies"]
    return {"tool": "pytango", "requests": len(lat), "seconds": out["seconds"],
            "rps": len(lat) / out["seconds"], "p50_ms": loadgen.percentile(lat, 50),
            "p90_ms": loadgen.percentile(lat, 90), "p99_ms": loadgen.percentile(lat, 99),
            "connections": DIRECT_TASKS}


@case("direct", f"direct PyTango client, asyncio, {DIRECT_TASKS} tasks")
def direct(ctx: Ctx) -> dict[str, Any]:
    return direct_client(ctx, SCALAR)


@case("rc3_scalar_1", f"rc3 {SCALAR}/value, 1 conn")
def rc3_scalar_1(ctx: Ctx) -> dict[str, Any]:
    return bridge_get(ctx, ctx.device_url(f"attributes/{SCALAR}/value"), 1)


@case("tangogql_scalar_1", f"TangoGQL {SCALAR} value, 1 conn", peer="tangogql")
def tangogql_scalar_1(ctx: Ctx) -> dict[str, Any]:
    return tangogql_load(ctx, [f"{DEMO_DEVICE}/{SCALAR}"], 1)


@case("rc3_scalar_64", f"rc3 {SCALAR}/value, 64 conn")
def rc3_scalar_64(ctx: Ctx) -> dict[str, Any]:
    return bridge_get(ctx, ctx.device_url(f"attributes/{SCALAR}/value"), 64)


@case("tangogql_scalar_64", f"TangoGQL {SCALAR} value, 64 conn", peer="tangogql")
def tangogql_scalar_64(ctx: Ctx) -> dict[str, Any]:
    return tangogql_load(ctx, [f"{DEMO_DEVICE}/{SCALAR}"], 64)


@case("rc3_multi_64", f"rc3 {len(MULTI)}-attribute value read, 64 conn")
def rc3_multi_64(ctx: Ctx) -> dict[str, Any]:
    url = ctx.device_url("attributes/value?" + "&".join(f"attr={a}" for a in MULTI))
    check_value(http("GET", url).json(), "rc3 multi")  # no failure inside the array
    return bridge_get(ctx, url, 64)


@case("tangogql_multi_64", f"TangoGQL {len(MULTI)} attributes, 64 conn", peer="tangogql")
def tangogql_multi_64(ctx: Ctx) -> dict[str, Any]:
    return tangogql_load(ctx, [f"{DEMO_DEVICE}/{a}" for a in MULTI], 64)


class StreamDrain:
    """An mTango subscription's event stream kept open (and read) on a socket of its own."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise BenchError("event stream closed before its head")
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            raise BenchError(f"event stream: {head[:200]!r}")
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


_streams: list[StreamDrain] = []


def live_subscription(ctx: Ctx) -> None:
    """An event stream on ``SCALAR`` in every worker (new connections until each worker has one)."""
    target = {"host": ctx.tango_host, "device": DEMO_DEVICE, "attribute": SCALAR,
              "type": "change"}
    reply = http("POST", ctx.bridge.base + "/tango/subscriptions", body=[target])
    sub = reply.json()
    if reply.status != 200 or sub.get("failures"):
        raise BenchError(f"subscription refused: {reply.status} {reply.body[:300]!r}")
    path = f"/tango/subscriptions/{sub['id']}/event-stream"

    def workers_with_upstream() -> set[str]:
        figures = ctx.bridge.get("/tango/rest/sys/subscriptions").json()
        return {str(u.get("worker")) for u in figures["upstreams"]
                if u.get("target", {}).get("attribute") == SCALAR and u.get("healthy")}

    # Each new connection lands on a worker the kernel picks: open streams until every worker
    # has a healthy upstream of the attribute (a few seconds for each stream's upstream).
    covered: set[str] = set()
    for _ in range(8 * ctx.args.workers):
        _streams.append(StreamDrain(ctx.bridge.port, path))
        deadline = time.monotonic() + (15 if not covered else 3)
        while time.monotonic() < deadline:
            grown = workers_with_upstream()
            if len(grown) > len(covered):
                covered = grown
                break
            time.sleep(0.2)
        if len(covered) >= ctx.args.workers:
            break
    else:
        raise BenchError(f"event streams on {SCALAR} reached {len(covered)} of "
                         f"{ctx.args.workers} workers")
    url = ctx.device_url(f"attributes/{SCALAR}/value?max_age=60000")

    def from_events() -> bool:
        return all(http("GET", url).headers.get("x-mtango-from-events") == SCALAR
                   for _ in range(4 * ctx.args.workers))
    try:
        poll("reads answered from events (x-mtango-from-events)", from_events, timeout=15)
    except AssertionError as exc:
        raise BenchError(str(exc)) from None


@case("rc3_cached_64", f"rc3 {SCALAR}/value?max_age=60000 (events), 64 conn",
      setup=live_subscription)
def rc3_cached_64(ctx: Ctx) -> dict[str, Any]:
    return bridge_get(ctx, ctx.device_url(f"attributes/{SCALAR}/value?max_age=60000"), 64)


# -- events (case 8): deliveries/s and delay of one attribute pushed at 10 Hz to many clients ------

EVENT_ATTRIBUTE = "pushed_counter"  # pushed by sys/tg_test/1 every 100 ms (Tango change events)
EVENT_PV = "bench:fast"  # the suite's caproto demo IOC: a double that changes about 10 times/s
# --event-clients: the values change about 9.9 times a second, so 1100 clients are offered about
# 10,900 deliveries/s, above the 10,000/s per worker the target asks for (1000 offered 9,870).
EVENT_CLIENTS = 1100
TANGOGQL_KEEPS_UP = 100  # clients TangoGQL kept up with (p99 < 100 ms) on the 2-core machine
EVENT_CLIENT = ROOT / "bench" / "suite_events_client.py"


def event_setup(ctx: Ctx) -> None:
    """The events cases' labels name the client count of this run (``--event-clients``)."""
    for c in CASES:
        count = ctx.args.event_clients
        if c.key == "tangogql_events_few":
            count = min(count, TANGOGQL_KEEPS_UP)
        elif c.key not in ("events_sse", "events_ws", "tangogql_events"):
            continue
        c.label = re.sub(r"\d+ clients$", f"{count} clients", c.label)


def event_clients(ctx: Ctx, mode: str, url: str, name: str, pids: list[int],
                  most: int = 0) -> dict[str, Any]:
    """``--event-clients`` clients (at most ``most`` if given) of ``mode`` in a process of their
    own (bench/suite_events_client.py); the server's CPU (``pids``) over the client's window."""
    count = min(ctx.args.event_clients, most) if most else ctx.args.event_clients
    duration = ctx.args.duration
    client = subprocess.Popen([sys.executable, str(EVENT_CLIENT), mode, url, str(count),
                               str(duration), name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        line = client.stdout.readline() if client.stdout else ""  # the window, once all are in
        if not line:
            client.wait(30)
            raise BenchError(f"{mode} clients of {url}: "
                             f"{(client.stderr.read() if client.stderr else '')[-1500:]}")
        window = json.loads(line)
        time.sleep(max(0.0, window["start"] - time.time()))
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        time.sleep(max(0.0, window["end"] - time.time()))
        server_cpu = (cpu_seconds(pids) - cpu0) / (time.monotonic() - t0) * 100
        out, err = client.communicate(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{mode} clients of {url} did not report") from None
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    if client.returncode or not out.strip():
        raise BenchError(f"{mode} clients of {url} failed: {err[-1500:]}")
    result = json.loads(out.strip().splitlines()[-1])
    if not result["deliveries"] or result["lost_count"] or result["problem_count"]:
        raise BenchError(f"{mode} clients of {url}: {result['deliveries']} deliveries, "
                         f"{result['lost_count']} connections lost {result['lost']}, "
                         f"{result['problem_count']} problems {result['problems']}")
    seconds, source = result["seconds"], result["source_hz"]  # events/s the source sent
    return {**result, "tool": f"suite_events_client {mode}", "connections": count,
            "requests": result["deliveries"], "rps": result["deliveries"] / seconds,
            "server_cpu": server_cpu, "server_rss_mb": rss_mb(pids),
            "on_time_per_s": result["on_time"] / seconds,
            "delivered_share": result["deliveries"] / (source * seconds * count)
            if source else 0.0}


@case("events_sse", f"SSE subscription stream {EVENT_ATTRIBUTE}, {EVENT_CLIENTS} clients",
      setup=event_setup)
def events_sse(ctx: Ctx) -> dict[str, Any]:
    """One mTango subscription (``POST /tango/subscriptions``), each client its own
    ``GET /tango/subscriptions/{id}/event-stream``."""
    target = {"host": ctx.tango_host, "device": DEMO_DEVICE, "attribute": EVENT_ATTRIBUTE,
              "type": "change"}
    reply = http("POST", ctx.bridge.base + "/tango/subscriptions", body=[target])
    sub = reply.json() if reply.status == 200 else {}
    if not sub.get("id") or sub.get("failures"):
        raise BenchError(f"subscription to {EVENT_ATTRIBUTE} refused: HTTP {reply.status} "
                         f"{reply.body[:300]!r}")
    try:
        url = f"{ctx.bridge.base}/tango/subscriptions/{sub['id']}/event-stream"
        return event_clients(ctx, "sse", url, "", ctx.bridge_pids)
    finally:
        http("DELETE", f"{ctx.bridge.base}/tango/subscriptions/{sub['id']}")


@case("events_ws", f"pvws WebSocket, PV {EVENT_PV} (EPICS), {EVENT_CLIENTS} clients",
      setup=event_setup)
def events_ws(ctx: Ctx) -> dict[str, Any]:
    """The bridge's only WebSocket, pvws, watches EPICS PVs only: the IOC's ``fast`` PV."""
    if not ctx.epics:
        raise BenchError("events_ws needs the suite's demo IOC (not started)")
    url = ctx.bridge.base.replace("http://", "ws://") + "/pvws/pv"
    return event_clients(ctx, "pvws", url, EVENT_PV, ctx.bridge_pids)


def tangogql_subscriptions(ctx: Ctx, most: int = 0) -> dict[str, Any]:
    """``subscription { attributes(fullNames: [...]) }`` over TangoGQL's ``/socket``
    (subprotocol ``graphql-ws``), one subscription per connection."""
    peer = ctx.peers["tangogql"]
    url = peer.url.replace("http://", "ws://").removesuffix("/db") + "/socket"
    return event_clients(ctx, "tangogql", url, f"{DEMO_DEVICE}/{EVENT_ATTRIBUTE}",
                         descendants(peer.pid), most)


@case("tangogql_events_few", f"TangoGQL subscription {EVENT_ATTRIBUTE}, "
      f"{TANGOGQL_KEEPS_UP} clients", peer="tangogql", setup=event_setup)
def tangogql_events_few(ctx: Ctx) -> dict[str, Any]:
    """As many clients as TangoGQL keeps up with (``TANGOGQL_KEEPS_UP``): with 1000 its delay
    grows for as long as the clients stay (seconds), and 200 already lag."""
    return tangogql_subscriptions(ctx, TANGOGQL_KEEPS_UP)


@case("tangogql_events", f"TangoGQL subscription {EVENT_ATTRIBUTE}, {EVENT_CLIENTS} clients",
      peer="tangogql", setup=event_setup)
def tangogql_events(ctx: Ctx) -> dict[str, Any]:
    """The same client count as the bridge's cases (TangoGQL falls behind: see the note)."""
    return tangogql_subscriptions(ctx)


# -- writes (case 7): the bridge runs with MTANGO_WRITES=on and an audit log ----------------------

WRITE_ATTRIBUTE = "long_scalar_w"  # a memory attribute no other case (and no test) reads
COMMAND = "DevDouble"


def audit_lines(ctx: Ctx) -> int:
    try:
        with open(ctx.audit_log, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def bridge_put(ctx: Ctx, url: str, body: str | None, connections: int) -> dict[str, Any]:
    """PUT ``url`` (every answer 2xx, checked once first) and count the audit lines it wrote."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    reply = http("PUT", url, body=json.loads(body) if body is not None else None,
                 headers=headers)
    if reply.status != 200 or b"FAILURE" in reply.body:
        raise BenchError(f"PUT {url}: HTTP {reply.status} {reply.body[:300]!r}")
    lines0, t0 = audit_lines(ctx), time.monotonic()
    result = http_load(ctx, url, connections, ctx.bridge_pids, method="PUT", body=body,
                       headers=headers)
    written = audit_lines(ctx) - lines0
    result["audit_lines_per_s"] = written / (time.monotonic() - t0)
    if written < result["requests"] * 0.99:  # every write is audited
        raise BenchError(f"PUT {url}: {result['requests']} answered, {written} audit lines")
    return result


@case("rc3_write_64", f"rc3 PUT {WRITE_ATTRIBUTE}/value?v=7 (audited), 64 conn")
def rc3_write_64(ctx: Ctx) -> dict[str, Any]:
    return bridge_put(ctx, ctx.device_url(f"attributes/{WRITE_ATTRIBUTE}/value?v=7"), None, 64)


@case("direct_write", f"direct PyTango write_attribute, {DIRECT_TASKS} tasks")
def direct_write(ctx: Ctx) -> dict[str, Any]:
    return direct_client(ctx, WRITE_ATTRIBUTE, "write")


@case("rc3_command_64", f"rc3 PUT commands/{COMMAND} 3.5 (audited), 64 conn")
def rc3_command_64(ctx: Ctx) -> dict[str, Any]:
    return bridge_put(ctx, ctx.device_url(f"commands/{COMMAND}"), "3.5", 64)


@case("direct_command", f"direct PyTango command_inout, {DIRECT_TASKS} tasks")
def direct_command(ctx: Ctx) -> dict[str, Any]:
    return direct_client(ctx, COMMAND, "command")


# -- isolation (case 10): a healthy device while 16 clients hammer a slow one ----------------------

SLOW_SERVER = "DemoTangoTest/bench-slow"
SLOW_DEVICE = "test/slow/1"  # SlowDevice: slow_scalar takes 3 s to read
HAMMER_CLIENTS = 16
ISOLATION_RATE = 100.0  # healthy reads per second, one keep-alive connection


def paced_reads(url: str, duration: float, rate: float) -> list[float]:
    """GET ``url`` at ``rate`` per second on one keep-alive connection; latencies in ms."""
    parts = urllib.parse.urlsplit(url)
    conn = HTTPConnection(parts.hostname, parts.port, timeout=30)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    latencies: list[float] = []
    start = time.monotonic()
    try:
        while (now := time.monotonic()) < start + duration:
            due = start + len(latencies) / rate
            if due > now:
                time.sleep(due - now)
            sent = time.perf_counter()
            conn.request("GET", path)
            reply = conn.getresponse()
            body = reply.read()
            latencies.append((time.perf_counter() - sent) * 1000)
            if reply.status != 200 or b'"value"' not in body or b"FAILURE" in body:
                raise BenchError(f"{url}: HTTP {reply.status} {body[:300]!r}")
    finally:
        conn.close()
    return latencies


def hammer(url: str, stop: threading.Event, answers: list[int]) -> None:
    """GET ``url`` until ``stop`` (the slow attribute: any answer, a timeout included, counts)."""
    while not stop.is_set():
        try:
            answers.append(http("GET", url, timeout=60).status)
        except OSError:
            answers.append(0)


def isolation_setup(ctx: Ctx) -> None:
    reply = http("GET", ctx.device_url("attributes/fast_scalar/value", SLOW_DEVICE))
    if reply.status != 200 or b'"value"' not in reply.body:
        raise BenchError(f"{SLOW_DEVICE}: HTTP {reply.status} {reply.body[:300]!r}")


@case("isolation", f"rc3 {SCALAR} at {ISOLATION_RATE:g}/s, {HAMMER_CLIENTS} on slow_scalar",
      setup=isolation_setup)
def isolation(ctx: Ctx) -> dict[str, Any]:
    healthy = ctx.device_url(f"attributes/{SCALAR}/value")
    slow = ctx.device_url("attributes/slow_scalar/value", SLOW_DEVICE)
    unloaded = paced_reads(healthy, ctx.args.duration, ISOLATION_RATE)
    stop, answers = threading.Event(), []
    threads = [threading.Thread(target=hammer, args=(slow, stop, answers), daemon=True)
               for _ in range(HAMMER_CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # the slow reads are under way
        t0 = time.monotonic()
        loaded = paced_reads(healthy, ctx.args.duration, ISOLATION_RATE)
        seconds = time.monotonic() - t0
    finally:
        stop.set()
    for thread in threads:  # each ends once its slow read answers (seconds)
        thread.join(120)
    return {"tool": "http.client", "requests": len(loaded), "seconds": seconds,
            "rps": len(loaded) / seconds, "p50_ms": loadgen.percentile(loaded, 50),
            "p90_ms": loadgen.percentile(loaded, 90), "p99_ms": loadgen.percentile(loaded, 99),
            "p99_unloaded_ms": loadgen.percentile(unloaded, 99),
            "p50_unloaded_ms": loadgen.percentile(unloaded, 50),
            "slow_answers": len(answers), "connections": 1 + HAMMER_CLIENTS}


# -- large values (case 6) and EPICS (case 9) -----------------------------------------------------

MB = 1e6
LARGE_SHAPES = {"big_spectrum": (1_000_000,), "big_image": (1000, 1000)}
_large: dict[str, Any] = {}  # attribute -> the numpy array of its (checked) JSON value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def strict_array(body: bytes, name: str) -> Any:
    """The value of a value object's body as a numpy array, the body parsed as strict JSON (no
    NaN or Infinity literals) and its shape checked."""
    import numpy as np

    try:
        value = json.loads(body, parse_constant=_reject_constant)["value"]
        if isinstance(value, dict):  # an image: {"data": row-major flat list, "width", "height"}
            value = np.reshape(np.asarray(value["data"], dtype=np.float64),
                               (value["height"], value["width"]))
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"{name}/value: {exc}: {body[:300]!r}") from None
    if array.shape != LARGE_SHAPES[name]:
        raise BenchError(f"{name}/value: shape {array.shape}, expected {LARGE_SHAPES[name]}")
    return array


def tobytes_mb_s(array: Any, seconds: float = 0.5) -> float:
    """numpy's own ``tobytes()`` of ``array``, MB/s of bytes out over ``seconds`` of calls."""
    count, size, start = 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or count < 3:
        size += len(array.tobytes())
        count += 1
    return size / elapsed / MB


def large_value(ctx: Ctx, name: str) -> dict[str, Any]:
    """GET ``name``/value one after the other on one keep-alive connection for the duration, each
    body read whole: MB/s of JSON received. One connection: the worker serialises one 8 MB value
    at a time anyway (one event loop, its CPU the bound), and on 2 shared cores more client
    connections only add queueing and a client competing for the cores; the figure is steadier."""
    url = ctx.device_url(f"attributes/{name}/value")
    parts = urllib.parse.urlsplit(url)
    conn = HTTPConnection(parts.hostname, parts.port, timeout=120)
    latencies: list[float] = []
    received = 0
    cpu0, t0 = cpu_seconds(ctx.bridge_pids), time.monotonic()
    try:
        while time.monotonic() < t0 + ctx.args.duration or not latencies:
            sent = time.perf_counter()
            conn.request("GET", parts.path)
            reply = conn.getresponse()
            body = reply.read()
            latencies.append((time.perf_counter() - sent) * 1000)
            if reply.status != 200:
                raise BenchError(f"{url}: HTTP {reply.status} {body[:300]!r}")
            received += len(body)
            if name not in _large:  # once per case: strict JSON of the right length
                _large[name] = strict_array(body, name)
    except OSError as exc:
        raise BenchError(f"{url}: {exc}") from None
    finally:
        conn.close()
    seconds = time.monotonic() - t0
    cpu = (cpu_seconds(ctx.bridge_pids) - cpu0) / seconds * 100
    json_rate = received / seconds / MB
    bound = tobytes_mb_s(_large[name])
    return {"tool": "http.client", "requests": len(latencies), "seconds": seconds,
            "rps": len(latencies) / seconds, "p50_ms": loadgen.percentile(latencies, 50),
            "p90_ms": loadgen.percentile(latencies, 90),
            "p99_ms": loadgen.percentile(latencies, 99), "connections": 1,
            "server_cpu": cpu, "server_rss_mb": rss_mb(ctx.bridge_pids),
            "body_mb": received / len(latencies) / MB, "json_mb_s": json_rate,
            "tobytes_mb_s": bound, "tobytes_ratio": json_rate / bound}


@case("large_spectrum", "rc3 big_spectrum/value (1,000,000 doubles), 1 conn")
def large_spectrum(ctx: Ctx) -> dict[str, Any]:
    return large_value(ctx, "big_spectrum")


@case("large_image", "rc3 big_image/value (1000x1000 doubles), 1 conn")
def large_image(ctx: Ctx) -> dict[str, Any]:
    return large_value(ctx, "big_image")


EPICS_PV = "bench:double"  # a caproto demo IOC PV (constant): monitored once first read
BULK_PVS = 1000
# Cases that need the suite's caproto demo IOC (EPICS_CA_ADDR_LIST of the suite's bridge). The
# 1000-PV cases have an IOC (softioc) and a bridge of their own (see bulk_setup).
EPICS_CASES = {"memory", "epics_pv_1", "epics_pv_64", "events_ws"}


def epics_pv_setup(ctx: Ctx) -> None:
    if not ctx.epics:
        raise BenchError("the EPICS cases need the suite's caproto IOC (EPICS_CASES)")
    reply = http("GET", f"{ctx.bridge.base}/epics/rest/v1/pvs/{EPICS_PV}/value", timeout=20)
    if reply.status != 200:
        raise BenchError(f"PV {EPICS_PV}: HTTP {reply.status} {reply.body[:300]!r}")
    check_value(reply.json(), f"PV {EPICS_PV}")


@case("epics_pv_1", f"EPICS {EPICS_PV} (monitored) pvs/.../value, 1 conn", setup=epics_pv_setup)
def epics_pv_1(ctx: Ctx) -> dict[str, Any]:
    return bridge_get(ctx, f"{ctx.bridge.base}/epics/rest/v1/pvs/{EPICS_PV}/value", 1)


@case("epics_pv_64", f"EPICS {EPICS_PV} (monitored) pvs/.../value, 64 conn",
      setup=epics_pv_setup)
def epics_pv_64(ctx: Ctx) -> dict[str, Any]:
    return bridge_get(ctx, f"{ctx.bridge.base}/epics/rest/v1/pvs/{EPICS_PV}/value", 64)


@dataclass
class Bulk:
    """The 1000-PV cases' own softioc IOC (``BULK_PVS`` ai records ``bench:bulk:NNNN``, value N),
    their own bridge (one worker, that IOC only; a fresh one for each cold read) and pyepics."""

    ioc: Any = None
    bridge: MainProcess | None = None
    started: int = 0
    python: str = ""  # pyepics' venv
    version: str = ""

    @property
    def names(self) -> list[str]:
        return list(self.ioc.bulk_names())

    def fresh_bridge(self, ctx: Ctx) -> MainProcess:
        self.stop_bridge()
        self.started += 1
        self.bridge = MainProcess(
            ["--workers", "1", "--tango-host", ctx.tango_host,
             "--epics-ca-addr-list", self.ioc.address],
            child_env(), ctx.workdir / f"bridge-epics-{self.started}.log")
        try:
            self.bridge.wait_ready("/epics/rest/v1")
        except RuntimeError as exc:
            raise BenchError(f"bridge for the 1000-PV cases: {str(exc)[-1500:]}") from None
        return self.bridge

    def stop_bridge(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None

    def stop(self) -> None:
        self.stop_bridge()
        if self.ioc is not None:
            self.ioc.stop()
            self.ioc = None


_bulk = Bulk()
BULK_SUM = float(sum(range(BULK_PVS)))


def bulk_setup(ctx: Ctx) -> None:
    if _bulk.ioc is None:
        try:
            _bulk.ioc = start_ioc("softioc", prefix="bench:", bulk=BULK_PVS, workdir=ctx.workdir)
        except Exception as exc:  # noqa: BLE001 - an error of the run, said in its output
            raise BenchError(f"softioc IOC with {BULK_PVS} ai records: {exc}") from None
        atexit.register(_bulk.stop)
    if not _bulk.python:
        venv = peer_venv(ctx.args.cache, "pyepics", ["pyepics"], "import epics")
        _bulk.python = str(venv / "bin" / "python")


def post_bulk(conn: HTTPConnection, names: list[str]) -> float:
    """One ``POST /epics/rest/v1/pvs/value`` of ``names``: seconds; every value checked."""
    sent = time.perf_counter()
    conn.request("POST", "/epics/rest/v1/pvs/value", json.dumps(names),
                 {"Content-Type": "application/json"})
    reply = conn.getresponse()
    body = reply.read()
    seconds = time.perf_counter() - sent
    items = json.loads(body) if reply.status == 200 else None
    if not isinstance(items, list) or len(items) != len(names):
        raise BenchError(f"POST pvs/value of {len(names)} PVs: HTTP {reply.status} "
                         f"{body[:300]!r}")
    check_value(items, f"POST pvs/value of {len(names)} PVs")
    if sum(float(item["value"]) for item in items) != BULK_SUM:
        raise BenchError(f"POST pvs/value of {len(names)} PVs: wrong values {body[:300]!r}")
    return seconds


def pyepics(ctx: Ctx, warm_seconds: float) -> dict[str, Any]:
    """bench/pyepics_client.py in pyepics' venv, a fresh process: its cold read, then warm ones."""
    env = child_env(EPICS_CA_ADDR_LIST=_bulk.ioc.address, EPICS_CA_AUTO_ADDR_LIST="NO")
    done = subprocess.run([_bulk.python, str(ROOT / "bench" / "pyepics_client.py"),
                           str(warm_seconds)], input=json.dumps(_bulk.names), env=env,
                          capture_output=True, text=True, timeout=warm_seconds + 120)
    if done.returncode:
        raise BenchError(f"pyepics caget_many failed: {done.stderr[-1500:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["missing"] or out["sum"] != BULK_SUM:
        raise BenchError(f"pyepics caget_many: {out['missing']} PVs without a value, "
                         f"sum {out['sum']} (expected {BULK_SUM})")
    _bulk.version = f"pyepics {out['version']}"
    return out


def bulk_figures(latencies_s: list[float], seconds: float, pyepics_s: float) -> dict[str, Any]:
    """``rps`` = 1000-PV reads per second (1000 / ms of one read: for the table)."""
    ms = [t * 1000 for t in latencies_s]
    median = statistics.median(ms)
    return {"tool": "http.client", "requests": len(ms), "seconds": seconds,
            "rps": 1000 / median, "p50_ms": median, "p90_ms": loadgen.percentile(ms, 90),
            "p99_ms": loadgen.percentile(ms, 99), "connections": 1, "pvs": BULK_PVS,
            "ms": median, "pyepics_ms": pyepics_s * 1000, "pyepics_ratio": median / 1000 /
            pyepics_s, "pyepics": _bulk.version}


@case("epics_1000_cold", f"EPICS {BULK_PVS} PVs, one POST, cold (fresh bridge)",
      setup=bulk_setup)
def epics_1000_cold(ctx: Ctx) -> dict[str, Any]:
    """The first request of a freshly started bridge (search, circuit, channels, reads), next to
    pyepics ``caget_many`` in a fresh process; one of each a round."""
    bridge = _bulk.fresh_bridge(ctx)
    conn = HTTPConnection("127.0.0.1", bridge.port, timeout=60)
    try:
        cold = post_bulk(conn, _bulk.names)
    finally:
        conn.close()
    return bulk_figures([cold], cold, pyepics(ctx, 0)["cold_s"])


@case("epics_1000_warm", f"EPICS {BULK_PVS} PVs, one POST, warm (monitored)",
      setup=bulk_setup)
def epics_1000_warm(ctx: Ctx) -> dict[str, Any]:
    """POSTs of the 1000 PVs one after the other for the duration once all are monitored (the
    median read), next to pyepics' ``caget_many`` calls after its first, for the duration."""
    bridge = _bulk.bridge or _bulk.fresh_bridge(ctx)
    conn = HTTPConnection("127.0.0.1", bridge.port, timeout=60)
    try:
        post_bulk(conn, _bulk.names)

        def monitored() -> bool:
            conn.request("GET", "/epics/rest/v1/health")
            health = json.loads(conn.getresponse().read())
            return int(health["channels"]["monitored"]) >= BULK_PVS
        try:
            poll(f"{BULK_PVS} PVs monitored", monitored, timeout=30, interval=0.1)
        except AssertionError as exc:
            raise BenchError(str(exc)) from None
        latencies: list[float] = []
        t0 = time.monotonic()
        while time.monotonic() < t0 + ctx.args.duration or not latencies:
            latencies.append(post_bulk(conn, _bulk.names))
        seconds = time.monotonic() - t0
    finally:
        conn.close()
    peer = pyepics(ctx, ctx.args.duration)
    return bulk_figures(latencies, seconds, statistics.median(peer["warm_s"]))


# -- memory (case 11): worker RSS after many distinct unknown names --------------------------------

MEMORY_NAMES = 20_000
PV_BATCH = 1000
PV_DEAD_TIMEOUT = 15.0  # MTANGO_EPICS_DEAD_TIMEOUT of the suite's bridge (default 60 s)
_memory: dict[str, Any] = {"next": 0, "baseline_mb": None}


def worker_pids(ctx: Ctx) -> list[int]:
    """The bridge's worker processes, as ``/tango/rest/sys/subscriptions`` names them (as
    bench/live_bench.py finds them; Sanic's manager and helper processes are not workers)."""
    figures = ctx.bridge.get("/tango/rest/sys/subscriptions").json()
    pids = sorted({int(worker["pid"]) for worker in figures.get("workers", {}).values()})
    if len(pids) != ctx.args.workers:
        raise BenchError(f"worker pids: {pids}, expected {ctx.args.workers} workers")
    return pids


def unknown_attributes(ctx: Ctx, names: range) -> list[float]:
    """GET ``nonexistent_N/value`` for each N, 16 threads; each answers a FAILURE (HTTP 200 in
    rc3 mode, or 404): that is the expected answer here, anything else is an error."""
    latencies: list[float] = []
    problems: list[str] = []
    todo = iter(names)
    lock = threading.Lock()

    def worker() -> None:
        parts = urllib.parse.urlsplit(ctx.bridge.base)
        conn = HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            while not problems:
                with lock:
                    n = next(todo, None)
                if n is None:
                    return
                path = urllib.parse.urlsplit(
                    ctx.device_url(f"attributes/nonexistent_{n:05d}/value")).path
                sent = time.perf_counter()
                conn.request("GET", path)
                reply = conn.getresponse()
                body = reply.read()
                latencies.append((time.perf_counter() - sent) * 1000)
                if reply.status not in (200, 404) or b"FAILURE" not in body and b"rror" not in body:
                    problems.append(f"{path}: HTTP {reply.status} {body[:300]!r}")
        except OSError as exc:
            problems.append(f"nonexistent attributes: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(DIRECT_TASKS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if problems:
        raise BenchError(problems[0])
    return latencies


def unknown_pvs(ctx: Ctx, names: range) -> None:
    """POST /epics/rest/v1/pvs/value with ``PV_BATCH`` unknown names a request (each item an
    error after the connect timeout, or refused by epics_max_searching: expected here)."""
    numbers = list(names)
    for start in range(0, len(numbers), PV_BATCH):
        batch = [f"nobody:{n:05d}" for n in numbers[start:start + PV_BATCH]]
        reply = http("POST", ctx.bridge.base + "/epics/rest/v1/pvs/value", body=batch,
                     headers={"Content-Type": "application/json"}, timeout=120)
        items = reply.json() if reply.status in (200, 207, 504) else None
        if not isinstance(items, list) or len(items) != len(batch):
            raise BenchError(f"POST pvs/value: HTTP {reply.status} {reply.body[:300]!r}")


@case("memory", f"{MEMORY_NAMES} unknown attributes + {MEMORY_NAMES} unknown PVs: RSS")
def memory(ctx: Ctx) -> dict[str, Any]:
    count = 200 if ctx.warmup else MEMORY_NAMES
    names = range(_memory["next"], _memory["next"] + count)
    _memory["next"] += count
    pids = worker_pids(ctx)
    before = rss_mb(pids)
    if _memory["baseline_mb"] is None and not ctx.warmup:
        _memory["baseline_mb"] = before  # after warm-up (every case ran once)
    t0 = time.monotonic()
    latencies = unknown_attributes(ctx, names)
    middle = rss_mb(pids)
    if ctx.epics:
        unknown_pvs(ctx, names)
    seconds = time.monotonic() - t0
    after = rss_mb(pids)
    released = after
    if ctx.epics:  # the unknown channels are given up after epics_dead_timeout: wait for that,
        # so that the cases after this one do not share the worker with 20,000 searches
        def given_up() -> bool:
            health = ctx.bridge.get("/epics/rest/v1/health").json()
            return health["channels"]["total"] <= 10
        try:
            poll("unknown PV channels given up", given_up, timeout=4 * PV_DEAD_TIMEOUT + 60,
                 interval=0.5)
        except AssertionError as exc:
            raise BenchError(str(exc)) from None
        released = rss_mb(pids)
    baseline = _memory["baseline_mb"] or before
    return {"tool": "http.client", "requests": len(latencies), "seconds": seconds,
            "rps": len(latencies) / seconds, "p50_ms": loadgen.percentile(latencies, 50),
            "p90_ms": loadgen.percentile(latencies, 90),
            "p99_ms": loadgen.percentile(latencies, 99), "connections": DIRECT_TASKS,
            "workers": len(pids), "rss_warm_mb": baseline, "rss_before_mb": before,
            "rss_after_attributes_mb": middle, "rss_released_mb": released,
            "rss_after_mb": after, "rss_ratio": after / baseline,
            "pv_names": len(names) if ctx.epics else 0}


# target: (case, reference case, bound, label[, kind]); kind "rps" (the default): requests/s of
# the case over those of the reference, at least the bound; "p99": the case's loaded p99 over its
# unloaded p99 (same case), at most the bound; "rss": the case's RSS after over RSS after warm-up,
# at most the bound; "bound": the case's JSON MB/s over numpy tobytes() MB/s of the same array, at
# least the bound; "ms": the case's median ms (no reference), at most the bound; "min": the case's
# own rps (no reference), at least the bound; "max_p99": the case's own p99 in ms (no reference),
# at most the bound; "on_time": deliveries/s within 100 ms of the case over the reference's, at
# least the bound (a reference with none: infinite).
TARGETS: list[tuple] = [
    ("rc3_scalar_64", "direct", 0.8, "rc3 scalar, 64 conn / direct PyTango client"),
    ("rc3_scalar_1", "tangogql_scalar_1", 5.0, "rc3 scalar, 1 conn / TangoGQL"),
    ("rc3_scalar_64", "tangogql_scalar_64", 5.0, "rc3 scalar, 64 conn / TangoGQL"),
    ("rc3_multi_64", "tangogql_multi_64", 5.0, "rc3 10-attribute read / TangoGQL"),
    ("rc3_cached_64", "baseline", 0.7, "rc3 read from events / baseline"),
    ("isolation", "isolation", 2.0, "healthy p99 with slow_scalar hammered / unloaded", "p99"),
    ("memory", "memory", 1.2, "worker RSS after 20k+20k unknown names / after warm-up", "rss"),
    ("large_spectrum", "large_spectrum", 0.25, "1M spectrum: JSON MB/s / tobytes() MB/s", "bound"),
    ("large_image", "large_image", 0.25, "1000x1000 image: JSON MB/s / tobytes() MB/s", "bound"),
    ("epics_pv_64", "baseline", 0.7, "EPICS monitored PV, 64 conn / baseline"),
    ("epics_1000_cold", "epics_1000_cold", 400, "EPICS 1000 PVs cold, ms", "ms"),
    ("epics_1000_warm", "epics_1000_warm", 40, "EPICS 1000 PVs warm, ms", "ms"),
    ("events_sse", "events_sse", 10000.0, "SSE event deliveries/s", "min"),
    ("events_sse", "events_sse", 100.0, "SSE event delay p99, ms", "max_p99"),
    ("events_ws", "events_ws", 100.0, "pvws (PV) event delay p99, ms", "max_p99"),
    ("events_sse", "tangogql_events", 5.0, "SSE deliveries/s within 100 ms / TangoGQL's",
     "on_time"),
    ("events_ws", "tangogql_events", 5.0, "pvws (PV) deliveries/s within 100 ms / TangoGQL's",
     "on_time"),
    ("events_sse", "tangogql_events_few", 5.0,
     f"SSE deliveries/s / TangoGQL, {TANGOGQL_KEEPS_UP} clients (keeps up)"),
]
AT_MOST = {"p99", "rss", "ms", "max_p99"}  # target kinds met at or below the bound


def target_ratio(kind: str, figures: dict[str, Any], ref: dict[str, Any]) -> float | None:
    if kind == "p99":
        keys = ("p99_ms", "p99_unloaded_ms")
        return figures[keys[0]] / figures[keys[1]] if all(k in figures for k in keys) else None
    if kind == "rss":
        return figures.get("rss_ratio")
    if kind == "bound":
        return figures.get("tobytes_ratio")
    if kind == "ms":
        return figures.get("ms")
    if kind == "min":
        return figures.get("rps")
    if kind == "max_p99":
        return figures.get("p99_ms")
    if kind == "on_time":
        if "on_time_per_s" not in figures or "on_time_per_s" not in ref:
            return None
        mine, theirs = figures["on_time_per_s"], ref["on_time_per_s"]
        return mine / theirs if theirs else float("inf") if mine else None
    return figures["rps"] / ref["rps"] if "rps" in figures and "rps" in ref else None


def case_note(figures: dict[str, Any]) -> str:
    """The figures of a case beyond the table's columns."""
    if "audit_lines_per_s" in figures:
        return f"audit {figures['audit_lines_per_s']:.0f} lines/s"
    if "p99_unloaded_ms" in figures:
        return f"unloaded p99 {figures['p99_unloaded_ms']:.2f} ms"
    if "tobytes_ratio" in figures:
        return (f"JSON {figures['json_mb_s']:.0f} MB/s ({figures['body_mb']:.1f} MB a body); "
                f"numpy tobytes() {figures['tobytes_mb_s']:.0f} MB/s; "
                f"ratio {figures['tobytes_ratio']:.4f}")
    if "pyepics_ratio" in figures:
        return (f"{figures['ms']:.1f} ms a read of {figures['pvs']} PVs; pyepics caget_many "
                f"{figures['pyepics_ms']:.1f} ms; bridge / pyepics {figures['pyepics_ratio']:.2f}")
    if "rss_ratio" in figures:
        return (f"worker RSS {figures['rss_warm_mb']:.0f} -> "
                f"{figures.get('rss_after_attributes_mb', 0):.0f} (attrs) -> "
                f"{figures['rss_after_mb']:.0f} MB ({figures['rss_ratio']:.2f}x); "
                f"{figures.get('rss_released_mb', 0):.0f} MB once the PV channels are given up")
    if "source_hz" in figures:
        return (f"source {figures['source_hz']:.2f} events/s, {figures['delivered_share']:.0%} "
                f"of that x clients delivered, {figures['on_time_per_s']:.0f}/s within 100 ms; "
                f"client CPU {figures['client_cpu']:.0f}%")
    return ""


# -- the run --------------------------------------------------------------------------------------


def median_of(rounds: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rounds if key in r]
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, Any]) -> str:
    lines = []
    base = results["cases"].get("baseline", {}).get("rps", float("nan"))
    lines.append(f"{'case':58}{'req/s':>9} {'x base':>7} {'p50 ms':>7} {'p99 ms':>7} "
                 f"{'srv CPU':>8}")
    for figures in results["cases"].values():
        label = figures["label"]
        if "skipped" in figures:
            lines.append(f"{label:58}  skipped: {figures['skipped']}")
            continue
        cpu = figures.get("server_cpu")
        lines.append(f"{label:58}{figures['rps']:9.0f} {figures['rps'] / base:7.2f} "
                     f"{figures['p50_ms']:7.2f} {figures['p99_ms']:7.2f} "
                     f"{(f'{cpu:.0f}%' if cpu is not None else '-'):>8}")
        if note := case_note(figures):  # on a line of its own: the table stays 100 wide
            lines.append(f"  {note}")
    lines.append("targets (ratios of this run):")
    for target in results["targets"]:
        ratio, most = target["ratio"], target["kind"] in AT_MOST
        met = ratio is not None and (ratio <= target["target"] if most
                                     else ratio >= target["target"])
        state = "n/a" if ratio is None else "met" if met else "NOT met"
        shown = ("-" if ratio is None else f"{ratio:.2f}" if abs(ratio) >= 0.1
                 else f"{ratio:.4f}")
        lines.append(f"  {target['label']:56} {shown:>6}  (target {'<=' if most else '>='} "
                     f"{target['target']:g}) {state}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all cases (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per case and round")
    parser.add_argument("--workers", type=int, default=1, help="bridge (and peer) workers")
    parser.add_argument("--cases", default="", help="comma-separated case keys (default: all)")
    parser.add_argument("--event-clients", type=int, default=EVENT_CLIENTS,
                        help=f"clients of the events_* cases (default {EVENT_CLIENTS})")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers' cases")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "aiohttp"], default="auto",
                        help="HTTP load generator (auto: wrk when on PATH, else aiohttp)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench",
                        help="where peers' virtual environments live (default .bench)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "suite.json")
    args = parser.parse_args()
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    unknown = wanted - {c.key for c in CASES}
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {[c.key for c in CASES]}")
    cases = [c for c in CASES if not wanted or c.key in wanted]
    tool = ("wrk" if shutil.which("wrk") else "aiohttp") if args.loadgen == "auto" else args.loadgen

    workdir = Path(f"/tmp/mtango-bench-suite-{time.time_ns()}")
    workdir.mkdir()
    errors: list[str] = []
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "loadavg_before": os.getloadavg()},
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "settings": {"rounds": args.rounds, "duration_s": args.duration,
                     "workers": args.workers, "loadgen": tool},
        "peers": {}, "cases": {}, "targets": [], "errors": errors,
    }
    system = start_tango_demo(workdir)
    keys = {c.key for c in cases}
    ioc = None
    env: dict[str, str] = {"MTANGO_WRITES": "on", "MTANGO_AUDIT_LOG": str(workdir / "audit.log")}
    try:
        if "isolation" in keys:
            system.add_server(SLOW_SERVER, {"SlowDevice": [SLOW_DEVICE]})
        if keys & EPICS_CASES:  # unknown PV names, monitored PVs: a caproto demo IOC of its own
            ioc = start_ioc("caproto", prefix="bench:", workdir=workdir)
            env.update(EPICS_CA_ADDR_LIST=ioc.address, MTANGO_EPICS_CONNECT_TIMEOUT_MS="300",
                       MTANGO_EPICS_DEAD_TIMEOUT=str(PV_DEAD_TIMEOUT),
                       MTANGO_EPICS_MAX_SEARCHING=str(MEMORY_NAMES))
    except Exception:
        system.stop()
        raise
    bridge = MainProcess(["--workers", str(args.workers), "--tango-host", system.tango_host],
                         child_env(**env), workdir / "bridge.log")
    peers: dict[str, Peer] = {}
    rounds: dict[str, list[dict[str, Any]]] = {c.key: [] for c in cases}
    skipped: dict[str, str] = {}
    try:
        bridge.wait_ready()
        ctx = Ctx(args, bridge, f"/tango/rest/rc3/hosts/{system.db_host}/{system.db_port}",
                  system.tango_host, system.trl(DEMO_DEVICE), peers, workdir=workdir,
                  epics=ioc is not None)
        poll("bridge workers up", lambda: len(descendants(bridge.process.pid)) > args.workers,
             timeout=30)
        ctx.bridge_pids = descendants(bridge.process.pid)
        if not args.no_peers and any(c.peer == "tangogql" for c in cases):
            peer = peers["tangogql"] = start_tangogql(args.cache, system.tango_host,
                                                      args.workers, workdir)
            results["peers"]["tangogql"] = {"version": peer.version, "url": peer.url,
                                            "error": peer.error}
            if peer.error:
                errors.append(f"TangoGQL: {peer.error}")
                print(f"suite: TangoGQL cannot be used: {peer.error}", file=sys.stderr)
        for c in cases:
            if c.peer and (args.no_peers or peers[c.peer].error):
                skipped[c.key] = ("--no-peers" if args.no_peers
                                  else f"{c.peer} did not start (see errors)")
        runnable = [c for c in cases if c.key not in skipped]
        for c in runnable:
            if c.setup:
                c.setup(ctx)
        warm = Ctx(argparse.Namespace(**{**vars(args), "duration": 1.0}), bridge,
                   ctx.host_path, ctx.tango_host, ctx.trl, peers, ctx.bridge_pids,
                   workdir=workdir, epics=ctx.epics, warmup=True)
        for c in runnable:  # warm-up (1 s each): proxies, configurations, connections
            c.run(warm)
        for number in range(args.rounds):
            for c in runnable:
                figures = c.run(ctx)
                rounds[c.key].append(figures)
                print(f"suite: round {number + 1}/{args.rounds} {c.key}: "
                      f"{figures['rps']:.0f} req/s", file=sys.stderr, flush=True)
    except BenchError as exc:
        errors.append(str(exc))
    finally:
        for stream in _streams:
            stream.close()
        for peer in peers.values():
            peer.stop()
        bridge.stop()
        if ioc is not None:
            ioc.stop()
        system.stop()

    for c in cases:
        entry: dict[str, Any] = {"label": c.label}
        if c.key in skipped:
            entry["skipped"] = skipped[c.key]
        elif rounds[c.key]:
            for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "server_cpu", "server_rss_mb",
                        "audit_lines_per_s", "p99_unloaded_ms", "rss_warm_mb", "rss_after_mb",
                        "rss_after_attributes_mb", "rss_released_mb", "rss_ratio",
                        "body_mb", "json_mb_s", "tobytes_mb_s", "tobytes_ratio", "pvs", "ms",
                        "pyepics_ms", "pyepics_ratio", "source_hz", "delivered_share",
                        "on_time_per_s", "client_cpu"):
                if key in rounds[c.key][0]:
                    entry[key] = median_of(rounds[c.key], key)
            entry["rounds"] = rounds[c.key]
        else:
            entry["skipped"] = "not measured (an error came first)"
        results["cases"][c.key] = entry
    for key, reference, bound, label, *kind in TARGETS:
        figures, ref = results["cases"].get(key, {}), results["cases"].get(reference, {})
        kind = kind[0] if kind else "rps"
        results["targets"].append({"case": key, "reference": reference, "target": bound,
                                   "label": label, "kind": kind,
                                   "ratio": target_ratio(kind, figures, ref)})
    results["machine"]["loadavg_after"] = os.getloadavg()
    table = report(results)
    results["table"] = table
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    peer_line = "; ".join(f"{name}: {p['version'] or 'did not start (ERROR below)'}"
                          for name, p in results["peers"].items()) or "none"
    print(f"mtango-bridge benchmark suite: commit {results['commit']}, main.py --workers "
          f"{args.workers}, {args.rounds} rounds x {args.duration:g} s per case, load generator "
          f"{tool}, {os.cpu_count()} cores (shared by the demo device server, the servers and the "
          f"load generator); peers: {peer_line}")
    print(table)
    before, after = results["machine"]["loadavg_before"], results["machine"]["loadavg_after"]
    print(f"load average (1 min) before the run {before[0]:.1f}, after it {after[0]:.1f}: other "
          "work on this machine shares its cores and shows in every figure")
    print(f"medians of {args.rounds} rounds; x base = requests/s / baseline requests/s; srv CPU = "
          f"the server's processes, % of one core. JSON: {args.json}")
    for error in errors:
        print(f"ERROR: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
