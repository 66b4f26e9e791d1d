"""Figures for the whole server, whatever the number of worker processes.

mtango-py's /sys numbers were per worker (whichever answered). Here every worker records into
prometheus-client metrics; in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set by ``main.py``
before the workers start) those live in memory-mapped files that any worker can read together.
So one store serves both ``/metrics`` (Prometheus text) and ``/sys/stats`` (JSON summary), and
every figure carries a ``worker`` label for the per-worker breakdown.

Without that variable (an in-process server, as in tests) the metrics live in a registry of their
own, which is the whole server since there is one process.
"""

from __future__ import annotations

import os
import resource
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)
CACHES = ("devices", "attributes", "pvs")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def worker_name() -> str:
    """Sanic names its workers (``SANIC_WORKER_NAME``); an in-process server is ``main``."""
    return os.environ.get("SANIC_WORKER_NAME", "main")


class Metrics:
    """The recording side: one per worker process (per app when in-process)."""

    def __init__(self, started_at: float | None = None) -> None:
        self.multiprocess = multiprocess_dir() is not None
        # In multiprocess mode the registry is only a namespace: values go to the shared files.
        self.registry = CollectorRegistry(auto_describe=True)
        self.worker = worker_name()
        self.started_at = started_at or time.time()
        reg = self.registry
        self.requests = Counter(
            "mtango_http_requests", "HTTP requests answered", ["worker", "endpoint", "method",
                                                               "status"], registry=reg)
        self.latency = Histogram(
            "mtango_http_request_duration_seconds", "Time to answer HTTP requests",
            ["worker", "endpoint", "status"], buckets=LATENCY_BUCKETS, registry=reg)
        self.cache_hits = Counter(
            "mtango_cache_hits", "Cache hits", ["worker", "cache"], registry=reg)
        self.cache_misses = Counter(
            "mtango_cache_misses", "Cache misses", ["worker", "cache"], registry=reg)
        self.cache_size = Gauge(
            "mtango_cache_entries", "Entries in a cache", ["worker", "cache"],
            multiprocess_mode="liveall", registry=reg)
        self.cache_maxsize = Gauge(
            "mtango_cache_maxsize", "Capacity of a cache", ["worker", "cache"],
            multiprocess_mode="liveall", registry=reg)
        self.upstream_calls = Counter(
            "mtango_upstream_calls", "Calls to the control system", ["worker", "system"],
            registry=reg)
        self.upstream_errors = Counter(
            "mtango_upstream_errors", "Failed calls to the control system", ["worker", "system"],
            registry=reg)
        self.channels = Gauge(
            "mtango_epics_channels", "EPICS channels by state", ["worker", "state"],
            multiprocess_mode="liveall", registry=reg)
        self.subscriptions = Gauge(
            "mtango_epics_subscriptions", "EPICS subscriptions (monitors)", ["worker"],
            multiprocess_mode="liveall", registry=reg)
        self.live_counters = Counter(
            "mtango_live_events", "Live values: events received from upstream (events), of "
            "which failures (errors), put into clients' queues (deliveries), replaced in a full "
            "queue by a newer one (coalesced)", ["worker", "kind"], registry=reg)
        self.live_upstreams = Gauge(
            "mtango_live_upstreams", "Upstream subscriptions (Tango events or bridge polling)",
            ["worker"], multiprocess_mode="liveall", registry=reg)
        self.live_listeners = Gauge(
            "mtango_live_listeners", "Listeners of upstream subscriptions (streams, long polls)",
            ["worker"], multiprocess_mode="liveall", registry=reg)
        self.live_streams = Gauge(
            "mtango_live_streams", "Open event streams", ["worker"],
            multiprocess_mode="liveall", registry=reg)
        self.clean_generation = Gauge(
            "mtango_clean_generation", "Last cache clean this worker carried out",
            ["worker", "cache"], multiprocess_mode="liveall", registry=reg)
        self.rss = Gauge(
            "mtango_process_resident_memory_bytes", "Resident memory of the worker",
            ["worker"], multiprocess_mode="liveall", registry=reg)
        self.cpu = Gauge(
            "mtango_process_cpu_seconds", "CPU time of the worker", ["worker"],
            multiprocess_mode="liveall", registry=reg)
        self.threads = Gauge(
            "mtango_process_threads", "Threads of the worker", ["worker"],
            multiprocess_mode="liveall", registry=reg)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.started = Gauge(
            "mtango_started_at_seconds", "When the server started (epoch seconds)", ["worker"],
            multiprocess_mode="liveall", registry=reg)
        self.started.labels(self.worker).set(self.started_at)

    # -- recording -------------------------------------------------------------------------------

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        # The labelled children are looked up once: ``labels()`` checks and joins its labels under
        # a lock each time, half of the 4.6 us this took per request (timeit, multiprocess mode).
        # Bounded: endpoints are route templates, statuses and methods few.
        children = self._request_children.get((endpoint, method, status))
        if children is None:
            children = self._request_children[(endpoint, method, status)] = (
                self.requests.labels(self.worker, endpoint, method, str(status)),
                self.latency.labels(self.worker, endpoint, str(status)))
        children[0].inc()
        children[1].observe(seconds)

    def cache_observer(self, cache: str) -> CacheObserver:
        return CacheObserver(self, cache)

    def upstream(self, system: str, ok: bool, count: int = 1, calls: bool = True) -> None:
        """``count`` calls to ``system``, failed unless ``ok`` (``calls=False``: failures only)."""
        if calls:
            self.upstream_calls.labels(self.worker, system).inc(count)
        if not ok:
            self.upstream_errors.labels(self.worker, system).inc(count)

    def sample_process(self) -> None:
        """Process figures are sampled (by a timer and before every summary), not counted."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu.labels(self.worker).set(usage.ru_utime + usage.ru_stime)
        self.rss.labels(self.worker).set(_resident_bytes())
        self.threads.labels(self.worker).set(_thread_count())

    # -- reading ---------------------------------------------------------------------------------

    def collect(self) -> list[Metric]:
        """Every worker's figures (multiprocess) or this server's (in-process)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return list(registry.collect())
        return list(self.registry.collect())

    def exposition(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def close(self) -> None:
        """Forget this worker's live gauges (its counters stay in the totals)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())


class CacheObserver:
    """What a cache reports about itself, recorded under its name and this worker."""

    def __init__(self, metrics: Metrics, cache: str) -> None:
        self._hits = metrics.cache_hits.labels(metrics.worker, cache)
        self._misses = metrics.cache_misses.labels(metrics.worker, cache)
        self._size = metrics.cache_size.labels(metrics.worker, cache)
        self._maxsize = metrics.cache_maxsize.labels(metrics.worker, cache)

    def hit(self, count: int = 1) -> None:
        self._hits.inc(count)

    def miss(self, count: int = 1) -> None:
        self._misses.inc(count)

    def resized(self, size: int, maxsize: int) -> None:
        self._size.set(size)
        self._maxsize.set(maxsize)


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


# -- summaries (pure functions over collected samples) -----------------------------------------


def _samples(metrics: Iterable[Metric], name: str) -> list[Any]:
    return [s for m in metrics for s in m.samples if s.name == name]


def _sum_by(samples: Iterable[Any], *labels: str) -> dict[Any, float]:
    totals: dict[Any, float] = defaultdict(float)
    for s in samples:
        key = tuple(s.labels.get(label, "") for label in labels)
        totals[key if len(labels) > 1 else key[0]] += s.value
    return dict(totals)


def percentile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Estimate a quantile from cumulative histogram buckets ``[(upper bound, count)]``."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower_bound
            span = cumulative - lower_count
            share = (rank - lower_count) / span if span > 0 else 0.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, cumulative
    return lower_bound


def cache_info(metrics: list[Metric], cache: str, worker: str | None = None) -> dict[str, int]:
    """``{hits, misses, currsize, maxsize}`` of one cache, over every worker (or one)."""

    def total(name: str) -> int:
        return int(sum(s.value for s in _samples(metrics, name)
                       if s.labels.get("cache") == cache
                       and (worker is None or s.labels.get("worker") == worker)))

    return {
        "hits": total("mtango_cache_hits_total"),
        "misses": total("mtango_cache_misses_total"),
        "currsize": total("mtango_cache_entries"),
        "maxsize": total("mtango_cache_maxsize"),
    }


def workers(metrics: list[Metric]) -> list[str]:
    return sorted({s.labels["worker"] for s in _samples(metrics, "mtango_started_at_seconds")})


def clean_generations(metrics: list[Metric], cache: str) -> dict[str, float]:
    return {s.labels["worker"]: s.value for s in _samples(metrics, "mtango_clean_generation")
            if s.labels.get("cache") == cache}


def summary(metrics: list[Metric], now: float | None = None) -> dict[str, Any]:
    """The JSON of ``/sys/stats``: totals over all workers plus a per-worker breakdown."""
    now = now or time.time()
    requests = _samples(metrics, "mtango_http_requests_total")
    started = [s.value for s in _samples(metrics, "mtango_started_at_seconds")]
    running_since = min(started) if started else now
    by_status = _sum_by(requests, "status")
    names = workers(metrics)

    def per_worker(worker: str) -> dict[str, Any]:
        own = [s for s in requests if s.labels.get("worker") == worker]
        return {
            "requests": int(sum(s.value for s in own)),
            "responses": {k: int(v) for k, v in sorted(_sum_by(own, "status").items())},
            "proxies": {c: cache_info(metrics, c, worker)["currsize"] for c in CACHES},
            "resource": _resources(metrics, worker),
        }

    return {
        "running_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(running_since)),
        "uptime": round(now - running_since, 3),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "requests": int(sum(s.value for s in requests)),
        "responses": {k: int(v) for k, v in sorted(by_status.items())},
        "errors": int(sum(v for k, v in by_status.items() if k.isdigit() and int(k) >= 400)),
        "proxies": {c: cache_info(metrics, c)["currsize"] for c in CACHES},
        "caches": {c: cache_info(metrics, c) for c in CACHES},
        "upstream": {
            "calls": {k: int(v) for k, v in _sum_by(
                _samples(metrics, "mtango_upstream_calls_total"), "system").items()},
            "errors": {k: int(v) for k, v in _sum_by(
                _samples(metrics, "mtango_upstream_errors_total"), "system").items()},
        },
        "endpoints": _endpoints(metrics, requests),
        "resource": _resources(metrics, None),
        "workers": {w: per_worker(w) for w in names},
    }


def _endpoints(metrics: list[Metric], requests: list[Any]) -> dict[str, Any]:
    counts = _sum_by(requests, "endpoint")
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for s in _samples(metrics, "mtango_http_request_duration_seconds_bucket"):
        buckets[s.labels["endpoint"]][float(s.labels["le"])] += s.value
    out = {}
    for endpoint, count in sorted(counts.items()):
        cumulative = sorted(buckets.get(endpoint, {}).items())
        latency = {
            f"p{int(q * 100)}_ms": _ms(percentile(cumulative, q)) for q in (0.5, 0.9, 0.99)
        }
        out[endpoint] = {"count": int(count), "latency": latency}
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _resources(metrics: list[Metric], worker: str | None) -> dict[str, Any]:
    def total(name: str) -> float:
        return sum(s.value for s in _samples(metrics, name)
                   if worker is None or s.labels.get("worker") == worker)

    return {
        "rss_bytes": int(total("mtango_process_resident_memory_bytes")),
        "cpu_seconds": round(total("mtango_process_cpu_seconds"), 3),
        "threads": int(total("mtango_process_threads")),
    }
