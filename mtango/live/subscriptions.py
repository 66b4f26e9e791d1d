"""mTango subscriptions (``/tango/subscriptions``), shared by every worker of the server.

A subscription belongs to the server, not to a worker: the waltz client POSTs it, PUTs targets,
DELETEs them and opens its event stream on fresh connections, which the kernel hands to any
worker. So a subscription lives in a small JSON file of the server's run directory, written under
one lock (``flock``) and replaced atomically; every worker reads it. A worker holding a stream
notices changes by the directory's modification time (one ``stat`` per upkeep tick for all its
streams) and reloads the file; a deleted file ends the stream.

A stream that is open touches the subscription's ``.alive`` file every heartbeat; a subscription
neither changed nor touched for ``subscription_idle_s`` is swept by whichever worker looks first.
No HTTP in here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Subscription = dict[str, Any]  # {"id", "events": [{"id", "target"}], "failures", "next_event"}


class SubscriptionStore:
    def __init__(self, run_dir: Path) -> None:
        self.directory = run_dir / "subscriptions"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.directory / ".lock"

    # -- reading (no lock: files are replaced atomically) ----------------------------------------

    def get(self, sub_id: int) -> Subscription | None:
        try:
            data: Subscription = json.loads(self._path(sub_id).read_bytes())
        except (OSError, ValueError):
            return None
        return data

    def version(self, sub_id: int) -> int | None:
        """Changes whenever subscription ``sub_id`` changes; None once it is gone."""
        try:
            return self._path(sub_id).stat().st_mtime_ns
        except OSError:
            return None

    def generation(self) -> int:
        """Changes whenever a subscription is created, changed or removed."""
        try:
            return os.stat(self.directory).st_mtime_ns
        except OSError:
            return 0

    def ids(self) -> list[int]:
        return [int(p.stem) for p in self.directory.glob("*.json") if p.stem.isdigit()]

    def count(self) -> int:
        return sum(1 for _ in self.directory.glob("*.json"))

    # -- changing --------------------------------------------------------------------------------

    def create(self, targets: list[dict[str, Any]], failures: list[Any]) -> Subscription:
        with self._locked():
            while True:
                # Not guessable (one client cannot cancel another's by counting), exact in JSON.
                sub_id = secrets.randbelow(2**31 - 1) + 1
                if not self._path(sub_id).exists():
                    break
            sub: Subscription = {"id": sub_id, "events": [], "failures": failures,
                                 "next_event": 1}
            _add(sub, targets)
            self._write(sub)
        return sub

    def add(self, sub_id: int, targets: list[dict[str, Any]],
            failures: list[Any]) -> list[dict[str, Any]] | None:
        """Add events for ``targets``: the events of those targets (a target the subscription
        has already keeps its event), or None without the subscription."""
        with self._locked():
            sub = self.get(sub_id)
            if sub is None:
                return None
            added = _add(sub, targets)
            # The latest failure per target: a client that retries does not grow the file.
            again = [f["target"] for f in failures]
            kept = [f for f in sub.get("failures", []) if f["target"] not in again]
            sub["failures"] = kept + failures
            self._write(sub)
        return added

    def remove(self, sub_id: int, event_ids: set[int]) -> Subscription | None:
        with self._locked():
            sub = self.get(sub_id)
            if sub is None:
                return None
            sub["events"] = [e for e in sub["events"] if e["id"] not in event_ids]
            self._write(sub)
        return sub

    def cancel(self, sub_id: int) -> bool:
        with self._locked():
            found = self._path(sub_id).exists()
            for path in (self._path(sub_id), self._alive(sub_id)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return found

    def touch(self, sub_id: int) -> None:
        """Say that a stream of ``sub_id`` is open (its idle time starts again)."""
        if not self._path(sub_id).exists():
            return  # cancelled: nothing to keep
        try:
            os.utime(self._alive(sub_id))
        except FileNotFoundError:
            self._alive(sub_id).touch()

    def sweep(self, idle_s: float) -> list[int]:
        """Remove subscriptions neither changed nor streamed for ``idle_s``; their ids."""
        horizon = time.time() - idle_s
        ids = {int(p.stem) for p in self.directory.glob("*.*") if p.stem.isdigit()}
        stale = [i for i in ids if self._last_used(i) < horizon]
        removed = []
        for sub_id in stale:
            with self._locked():
                if self._last_used(sub_id) >= horizon:
                    continue  # touched meanwhile
                for path in (self._path(sub_id), self._alive(sub_id)):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            removed.append(sub_id)
        return removed

    # -- internals -------------------------------------------------------------------------------

    def _path(self, sub_id: int) -> Path:
        return self.directory / f"{sub_id}.json"

    def _alive(self, sub_id: int) -> Path:
        return self.directory / f"{sub_id}.alive"

    def _last_used(self, sub_id: int) -> float:
        times = [0.0]
        for path in (self._path(sub_id), self._alive(sub_id)):
            with contextlib.suppress(FileNotFoundError):
                times.append(path.stat().st_mtime)
        return max(times)

    def _write(self, sub: Subscription) -> None:
        path = self._path(sub["id"])
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(sub))
        os.replace(temporary, path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _add(sub: Subscription, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for target in targets:
        event = next((e for e in sub["events"] if e["target"] == target), None)
        if event is None:
            event = {"id": sub["next_event"], "target": target}
            sub["next_event"] += 1
            sub["events"].append(event)
        found.append(event)
    return found


def public(sub: Subscription) -> dict[str, Any]:
    """A subscription as clients see it: ``{id, events, failures}``."""
    return {"id": sub["id"], "events": sub["events"], "failures": sub.get("failures", [])}
