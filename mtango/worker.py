"""What one worker process keeps besides its backends: metrics, cache orders and upkeep.

``/sys/clean/devices`` is answered by one worker but must empty the caches of all of them. The
answering worker bumps a generation number in a small file of the server's run directory (one
file per cache, updated under an exclusive lock); every worker's upkeep task checks those numbers
ten times a second and empties its cache when one has moved, then reports the generation it has
carried out (``mtango_clean_generation``) so the answering worker can wait until all have.

The same task copies figures that are cheaper to sample than to count (EPICS channel states,
reads served from monitors, live-value counters, process resources) into the shared metrics,
writes this worker's upstream subscriptions to ``live-<worker>.json`` for ``/sys/subscriptions``,
tells this worker's event streams when mTango subscriptions changed on disk, and sweeps
subscriptions idle for ``subscription_idle_s``.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtango.config import Config
from mtango.live.hub import Hub
from mtango.live.subscriptions import SubscriptionStore
from mtango.stats import CACHES, Metrics

log = logging.getLogger("mtango")
ORDERS_INTERVAL = 0.1  # seconds between looks at the order files
SAMPLE_INTERVAL = 1.0  # seconds between samples of channel states and process figures
STREAMS_PER_COLLECTION = 500
SWEEP_INTERVAL = 5.0  # most seconds between looks for idle mTango subscriptions


def run_dir() -> tuple[Path, bool]:
    """The server's shared run directory (``MTANGO_RUN_DIR``, set by main.py, which removes it),
    or a new one of this app's own (an in-process server), which the app removes when it stops:
    ``(path, own)``."""
    configured = os.environ.get("MTANGO_RUN_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix="mtango-run-")), True


class CleanOrders:
    """Generation numbers of "empty this cache" orders, in files every worker can read."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, cache: str) -> Path:
        return self.directory / f"clean-{cache}"

    def generation(self, cache: str) -> int:
        try:
            return int(self._path(cache).read_text() or 0)
        except (OSError, ValueError):
            return 0

    def order(self, cache: str) -> int:
        """Ask every worker to empty ``cache``; returns the new generation number."""
        with open(self._path(cache), "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read().strip()
            generation = (int(text) if text.isdigit() else 0) + 1
            handle.seek(0)
            handle.truncate()
            handle.write(str(generation))
            handle.flush()
        return generation


class Worker:
    """One worker's metrics, the clear functions of its caches, and its upkeep task."""

    def __init__(self, metrics: Metrics, orders: CleanOrders, tango: Any, epics: Any,
                 hub: Hub, subscriptions: SubscriptionStore, streams: set[Any],
                 config: Config) -> None:
        self.metrics = metrics
        self.orders = orders
        self.tango = tango
        self.epics = epics
        self.hub = hub
        self.subscriptions = subscriptions
        self.streams = streams  # this worker's open event streams (mtango.api.subscriptions)
        self.config = config
        self._subscriptions_seen = subscriptions.generation()
        self._live_seen = {"events": 0, "errors": 0, "deliveries": 0, "coalesced": 0}
        self._live_written = b""
        self._next_sweep = 0.0
        self._closed_streams = 0
        self._clear: dict[str, Callable[[], Any]] = {
            "devices": tango.clear_devices,
            "attributes": tango.attributes.clear,
            "pvs": epics.release_channels,
        }
        self._seen = {cache: orders.generation(cache) for cache in CACHES}
        for cache, generation in self._seen.items():
            metrics.clean_generation.labels(metrics.worker, cache).set(generation)
        self._epics_seen = {"cache": 0, "upstream": 0, "failures": 0}
        self._pvs = metrics.cache_observer("pvs")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.sample(full=True)
        self._task = asyncio.get_running_loop().create_task(self._upkeep())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.metrics.close()

    def carry_out_orders(self) -> None:
        for cache in CACHES:
            generation = self.orders.generation(cache)
            if generation != self._seen[cache]:
                self._clear[cache]()
                self._seen[cache] = generation
                self.metrics.clean_generation.labels(self.metrics.worker, cache).set(generation)

    def watch_subscriptions(self) -> None:
        """Tell this worker's streams when any mTango subscription changed on disk."""
        generation = self.subscriptions.generation()
        if generation != self._subscriptions_seen:
            self._subscriptions_seen = generation
            for stream in self.streams:
                stream.mark_stale()

    def stream_closed(self) -> None:
        """An event stream ended: collect the cycles closed streams leave, in batches.

        A stream's connection, request, response and queue end up in reference cycles that
        outlive the young generations (the app raises their threshold to 50,000), so full
        collections came too rarely: a worker kept 6.5 MB more after each round of 1000 streams
        (measured with bench/live_bench.py, 101 -> 119 -> 125 -> 132 -> 139 MB). Collecting
        after every 500 closed streams, and when the last one closes, kept it at 119-121 MB.
        """
        self._closed_streams += 1
        if self._closed_streams >= STREAMS_PER_COLLECTION or not self.streams:
            self._closed_streams = 0
            gc.collect()

    def live_figures(self) -> dict[str, Any]:
        """This worker's upstream subscriptions and counters (the part of /sys/subscriptions)."""
        hub = self.hub
        upstreams = hub.describe()
        return {
            "worker": self.metrics.worker,
            "pid": os.getpid(),
            "upstreams": upstreams,
            "listeners": sum(u["listeners"] for u in upstreams),
            "streams": len(self.streams),
            # Every open event stream's queue: events waiting and how many were coalesced.
            "clients": [stream.figures() for stream in self.streams],
            **vars(hub.stats),
        }

    def publish_live(self) -> None:
        """Write ``live-<worker>.json`` (when it changed) and copy live counters to metrics."""
        figures = self.live_figures()
        data = json.dumps(figures).encode()
        if data != self._live_written:
            path = self.orders.directory / f"live-{self.metrics.worker}.json"
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(data)
            os.replace(temporary, path)
            self._live_written = data
        m = self.metrics
        for key in self._live_seen:
            delta, self._live_seen[key] = figures[key] - self._live_seen[key], figures[key]
            if delta > 0:
                m.live_counters.labels(m.worker, key).inc(delta)
        m.live_upstreams.labels(m.worker).set(len(figures["upstreams"]))
        m.live_listeners.labels(m.worker).set(figures["listeners"])
        m.live_streams.labels(m.worker).set(figures["streams"])

    def sample(self, full: bool = False) -> None:
        """Copy EPICS figures (and, when ``full``, channel states and process figures)."""
        figures = self.epics.figures(full)
        if figures is not None:
            for key in ("cache", "upstream", "failures"):
                delta, self._epics_seen[key] = figures[key] - self._epics_seen[key], figures[key]
                if delta <= 0:
                    continue
                if key == "cache":
                    self._pvs.hit(delta)
                elif key == "upstream":
                    self._pvs.miss(delta)
                    self.metrics.upstream("epics", True, delta)
                else:
                    self.metrics.upstream("epics", False, delta, calls=False)
            self._pvs.resized(figures["channels"], 0)
            if full and "states" in figures:
                for state, count in figures["states"].items():
                    self.metrics.channels.labels(self.metrics.worker, state).set(count)
                self.metrics.subscriptions.labels(self.metrics.worker).set(figures["subscriptions"])
        if full:
            self.metrics.sample_process()
            self.publish_live()
            now = time.monotonic()
            if now >= self._next_sweep:
                # A stat per subscription file: every few seconds is soon enough for an idle
                # time of a minute.
                self._next_sweep = now + min(SWEEP_INTERVAL, self.config.subscription_idle_s / 4)
                self.subscriptions.sweep(self.config.subscription_idle_s)

    async def _upkeep(self) -> None:
        next_full = time.monotonic() + SAMPLE_INTERVAL
        while True:
            await asyncio.sleep(ORDERS_INTERVAL)
            try:
                self.carry_out_orders()
                self.watch_subscriptions()
                full = time.monotonic() >= next_full
                if full:
                    next_full = time.monotonic() + SAMPLE_INTERVAL
                self.sample(full)
            except Exception:  # the upkeep must outlive any single failure
                log.exception("worker upkeep failed")
