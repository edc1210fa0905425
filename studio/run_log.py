"""RunLog: what one training run publishes while it goes (events, progress snapshot, train.log, state.json).

Kept apart from TrainingJob, which builds the trainer and runs it: the job and its trainer callbacks write here,
and the UI, the CLI and tests read from here, never waiting on the trainer::

    log = RunLog("my-run")
    log.set_state(RunStatus.TRAINING, "resuming from checkpoint-4")   # snapshot, event, train.log, state.json
    log.update(loss=1.25)                                              # the snapshot only
    log.snapshot()["loss"], log.events(since=0)

Every process keeps its own snapshot and events; only the main one writes the run folder.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from studio import process, runs
from studio.status import RunStatus

__all__ = ["RunLog", "publish", "active"]


_active: "RunLog | None" = None


def publish(log: "RunLog") -> None:
    """Make ``log`` the process's current run (set when a job starts), so chat can see a run is going."""
    global _active
    _active = log


def active() -> "RunLog | None":
    """The log of the process's most recent run (running or finished), or None."""
    return _active


class RunLog:
    """One run's event log, progress snapshot and step clock, and its writes to the run folder.

    Readers and the training thread meet under one lock that is held only to copy a dict or append one.

    Args:
        name: the run's name, as the snapshot shows it.
    """

    def __init__(self, name: str):
        self.run_dir: Path | None = None
        """the run folder; train.log and state.json are written only once it is set"""
        self._lock = threading.Lock()
        self._events: list[dict] = []
        self._progress: dict = {"state": RunStatus.QUEUED.value, "step": 0, "total": None, "epoch": 0.0,
                                "eta_seconds": None, "loss": None, "eval_loss": None, "learning_rate": None,
                                "tokens_per_second": None, "memory_bytes": None, "message": "", "run_dir": None,
                                "name": name}
        self._t0 = 0.0
        self._step0 = 0

    # ---- reading --------------------------------------------------------------------------------

    @property
    def state(self) -> RunStatus:
        """Where the run is now."""
        return RunStatus(self._progress["state"])

    def snapshot(self) -> dict:
        """A copy of the small progress dict (cheap; never waits on the trainer)."""
        with self._lock:
            return dict(self._progress)

    def events(self, since: int = 0) -> list[dict]:
        """Events with index >= ``since``: {"index", "type", "time", ...}. Many readers may follow one run."""
        with self._lock:
            return list(self._events[max(0, since):])

    # ---- writing --------------------------------------------------------------------------------

    def event(self, kind: str, **data: Any) -> None:
        """Append one event of type ``kind`` (state, setup, log, eval, message) with its fields."""
        with self._lock:
            self._events.append({"index": len(self._events), "type": kind, "time": round(time.time(), 3), **data})

    def update(self, **values: Any) -> None:
        """Set fields of the progress snapshot."""
        with self._lock:
            self._progress.update(values)

    def set_state(self, status: RunStatus, message: str = "", **extra: Any) -> None:
        """Move the run to ``status``: the snapshot, a state event, a train.log line and state.json (with ``extra``)."""
        state = status.value  # snapshot, events and state.json hold plain strings
        self.update(state=state, message=message)
        self.event("state", state=state, message=message)
        self.write_log(f"{state}: {message}" if message else state)
        self.write_state(status=state, message=message, **extra)

    def write_state(self, **values: Any) -> None:
        """Merge ``values`` into the run folder's state.json (main process only)."""
        if self.run_dir is not None and process.is_main_process():
            runs.write_state(self.run_dir, **values)

    def write_log(self, line: str) -> None:
        """Append a time-stamped line to the run folder's train.log (main process only)."""
        if self.run_dir is None or not process.is_main_process():
            return
        with open(self.run_dir / "train.log", "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    # ---- the step clock -------------------------------------------------------------------------

    def train_began(self, step: int, total: int) -> None:
        """Training (re)starts at optimizer step ``step`` of ``total``: the clock for ETA and step time starts."""
        self._t0 = time.perf_counter()
        self._step0 = step
        self.update(total=total, step=step)

    def step_ended(self, step: int, total: int, epoch: float | None, tokens: int) -> None:
        """Optimizer step ``step`` is done: step, epoch, tokens, ETA and the mean step time go into the snapshot.

        The mean counts only the steps taken since ``train_began``, so a resumed run's ETA is not skewed by the
        steps it skipped.
        """
        now = time.perf_counter()
        done = step - self._step0
        eta = (now - self._t0) / done * (total - step) if done else None
        self.update(step=step, total=total, epoch=round(epoch or 0, 4), eta_seconds=eta,
                    train_seconds=round(now - self._t0, 3), tokens=tokens,
                    step_seconds=(now - self._t0) / done if done else None, step_at=time.time())
