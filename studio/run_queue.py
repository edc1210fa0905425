"""The run queue: runs wait on disk (``<runs folder>/queue.json``) and start one at a time, in order.

Runs still train one at a time in a process. A run queued while another trains starts when that one ends; the
queue is a file, so it survives a restart of the studio, and an entry can be removed before it starts::

    queue = RunQueue("runs")
    entry = queue.add(cfg)                    # {"id", "name", "added", "config"}
    queue.remove(entry["id"])
    QueueRunner(queue).start()                # a thread: starts the next entry whenever no run is going

``python -m studio sweep PRESET --grid method.r=8,16 --grid train.learning_rate=1e-4,3e-4`` makes one RunConfig
per grid point (``grid_configs``) and queues them or trains them one after the other.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from studio import runs, training, validation
from studio.config import ConfigError, RunConfig

__all__ = ["RunQueue", "QueueRunner", "grid_configs", "parse_grid", "QUEUE_FILE"]

QUEUE_FILE = "queue.json"


class RunQueue:
    """The queued runs of one runs folder, kept in a JSON file (every change is written at once, atomically).

    Args:
        root: the runs folder.
    """

    _lock = threading.Lock()  # one lock for every queue object of the process: they may share a file

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / QUEUE_FILE

    def entries(self) -> list[dict]:
        """The queued runs, first to start first."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [e for e in data if isinstance(e, dict) and "id" in e] if isinstance(data, list) else []

    def add(self, cfg: RunConfig) -> dict:
        """Queue ``cfg`` (checked first: a config that cannot run is refused now, not when its turn comes)."""
        validation.validate(cfg)
        entry = {"id": uuid.uuid4().hex[:8], "name": cfg.train.run_name or cfg.method.name,
                 "added": runs.now(), "config": cfg.to_dict()}
        with self._lock:
            self._write(self.entries() + [entry])
        return entry

    def remove(self, entry_id: str) -> bool:
        """Drop an entry that has not started; False when there is none with that id."""
        with self._lock:
            left = [e for e in self.entries() if e["id"] != entry_id]
            found = len(left) != len(self.entries())
            if found:
                self._write(left)
        return found

    def pop(self) -> dict | None:
        """Take the first entry off the queue (None when empty)."""
        with self._lock:
            queued = self.entries()
            if not queued:
                return None
            self._write(queued[1:])
            return queued[0]

    def _write(self, entries: list[dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=1), encoding="utf-8")
        tmp.replace(self.path)


class QueueRunner:
    """Starts the queue's next run whenever no run is going in this process.

    Args:
        queue: the RunQueue to follow.
        start: starts a RunConfig and returns its job (default: a TrainingJob into the queue's runs folder).
        interval: seconds between looks.
    """

    def __init__(self, queue: RunQueue, start: Callable[[RunConfig], object] | None = None, interval: float = 2.0):
        self.queue, self.interval = queue, interval
        self._start = start or (lambda cfg: training.TrainingJob(cfg).start())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started: list[tuple[str, object]] = []
        """(entry id, job) of every run this runner started"""
        self.refused: list[tuple[str, str]] = []
        """(entry id, reason) of entries that could not start (dropped from the queue)"""

    def tick(self):
        """Start the next entry when nothing is training; the job started, or None."""
        job = training.current_job()
        if job is not None and job.running:
            return None
        entry = self.queue.pop()
        if entry is None:
            return None
        try:
            cfg = RunConfig.from_dict(entry["config"])
            cfg.train.output_dir = str(self.queue.root)  # a queue's runs land in its own runs folder
            job = self._start(cfg)
        except ConfigError as err:
            self.refused.append((entry["id"], "; ".join(err.problems)))
            return None
        self.started.append((entry["id"], job))
        return job

    def start(self) -> "QueueRunner":
        """Look every ``interval`` seconds in a daemon thread (it only starts runs; they are not daemons)."""
        self._thread = threading.Thread(target=self._loop, name="run-queue", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["method.r=8,16"]`` -> ``[("method.r", ["8", "16"])]``; ConfigError naming a malformed one."""
    out = []
    for item in items:
        key, sep, values = item.partition("=")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not choices:
            raise ConfigError(f"--grid {item!r}: write SECTION.KEY=V1,V2,...")
        out.append((key.strip(), choices))
    return out


def grid_configs(cfg: RunConfig, grid: list[tuple[str, list[str]]]) -> list[RunConfig]:
    """One RunConfig per point of the grid (values typed by the config), each with its own run name."""
    base = cfg.train.run_name or f"sweep-{cfg.method.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = []
    for point in itertools.product(*[[(k, v) for v in values] for k, values in grid]):
        overrides = [f"{k}={v}" for k, v in point]
        one = validation.with_overrides(RunConfig.from_dict(cfg.to_dict()), overrides)
        one.train.run_name = runs.sanitize_name(base + "-" + "-".join(f"{k.rpartition('.')[2]}{v}" for k, v in point))
        out.append(one)
    return out
