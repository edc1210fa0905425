"""RunStatus: the one spelling of a training run's status, for the job, state.json and every tab.

A ``str`` Enum: each member equals the string written in state.json and in a job's snapshot
(``RunStatus.DONE == "done"``), so folders written before and code that compares with strings read the same.
Which statuses count as busy, ended, resumable or holding a result is said here once::

    status = RunStatus(runs.read_state(run_dir).get("status"))   # anything unrecognised reads as UNKNOWN
    if status.resumable and runs.last_checkpoint(run_dir):
        ...

This module imports nothing from the studio: it is on the ground floor.
"""

from __future__ import annotations

import enum

__all__ = ["RunStatus"]


class RunStatus(enum.StrEnum):
    """Where a run is: the job's ``state`` and state.json's ``status``."""

    QUEUED = "queued"
    """started; waiting for the model to load"""
    LOADING = "loading"
    """loading the model and the data"""
    TRAINING = "training"
    SAVING = "saving"
    """writing the adapter"""
    DONE = "done"
    STOPPED = "stopped"
    """stopped by request; what was trained is saved"""
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """state.json says busy but the process that wrote it is gone (a kill, a crash); read, never written"""
    UNKNOWN = "unknown"
    """state.json has no status, or one the studio does not write"""

    @classmethod
    def _missing_(cls, value: object) -> "RunStatus":
        return cls.UNKNOWN

    @property
    def busy(self) -> bool:
        """From Start until the result is written (queued, loading, training, saving): the run holds the model."""
        return self in _BUSY

    @property
    def working(self) -> bool:
        """Past the queue and not yet ended (loading, training, saving): the job's thread has taken the run up."""
        return self in _WORKING

    @property
    def ended(self) -> bool:
        """Over, one way or another (done, stopped, failed, interrupted)."""
        return self in _ENDED

    @property
    def has_result(self) -> bool:
        """Ended with its adapter written (done, stopped)."""
        return self in _HAS_RESULT

    @property
    def resumable(self) -> bool:
        """Ended early (stopped, interrupted, failed): it can go on from a checkpoint, where it has one."""
        return self in _RESUMABLE


_BUSY = frozenset({RunStatus.QUEUED, RunStatus.LOADING, RunStatus.TRAINING, RunStatus.SAVING})
_WORKING = _BUSY - {RunStatus.QUEUED}
_ENDED = frozenset({RunStatus.DONE, RunStatus.STOPPED, RunStatus.FAILED, RunStatus.INTERRUPTED})
_HAS_RESULT = frozenset({RunStatus.DONE, RunStatus.STOPPED})
_RESUMABLE = frozenset({RunStatus.STOPPED, RunStatus.INTERRUPTED, RunStatus.FAILED})
