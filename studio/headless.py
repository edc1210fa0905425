"""``python -m studio train`` in this process: follow a TrainingJob and print what it reports.

    run_dir = headless.run_headless(cfg)     # progress lines on stdout, data warnings on stderr
"""

from __future__ import annotations

import sys
from pathlib import Path

from studio import process, training
from studio.config import ConfigError, RunConfig
from studio.status import RunStatus

__all__ = ["run_headless", "TrainingFailed"]


def run_headless(cfg: RunConfig, quiet: bool = False, *, retries: int = 0, callbacks: tuple = ()) -> Path:
    """Train ``cfg`` in this process, printing a progress line per log unless ``quiet``; returns the run folder.

    Rows the data left out or cut short are said on stderr, as one ``warning:`` line, even when ``quiet``.
    Ctrl-C stops the run cleanly (what was trained is saved). Raises the job's error when it fails:
    a ConfigError subclass for failures the person can fix, TrainingFailed otherwise.

    Args:
        retries: after running out of memory, start again up to this many times with half the micro-batch
            and twice the accumulation (the same tokens per step), each as a new run folder.
        callbacks: extra transformers TrainerCallbacks for the job (and its retries).
    """
    job = training.TrainingJob(cfg, callbacks=callbacks).start()
    while True:
        _follow(job, quiet)
        if job.state is not RunStatus.FAILED or not isinstance(job.error, training.OutOfMemory) or retries <= 0:
            break
        retries -= 1
        try:
            smaller = job.retry_smaller()
        except ConfigError:  # micro-batch 1 already: nothing smaller to try
            break
        t = smaller.cfg.train
        print(f"warning: {job.snapshot()['message']}; retrying as {smaller.name} with train.micro_batch_size="
              f"{t.micro_batch_size}, train.grad_accum={t.grad_accum}", file=sys.stderr, flush=True)
        job = smaller
    if job.state is RunStatus.FAILED:
        err = job.error
        if isinstance(err, ConfigError):
            raise err
        raise TrainingFailed(f"{job.snapshot()['message']} (see {job.run_dir / 'train.log'})")
    return job.run_dir


def _follow(job, quiet: bool) -> None:
    """Print what ``job`` reports until it ends; Ctrl-C stops it (and waits for the save)."""
    seen = 0
    try:
        while True:
            finished = job.wait(0.5)
            for event in job.events(seen):
                seen = event["index"] + 1
                if not process.is_main_process():
                    continue
                note = _data_note(event)
                if note:
                    print(f"warning: {note}", file=sys.stderr, flush=True)
                line = None if quiet else _progress_line(event)
                if line:
                    print(line, flush=True)
            if finished:
                return
    except KeyboardInterrupt:
        job.stop()
        job.wait()


class TrainingFailed(RuntimeError):
    """A run that failed for a reason that is not the configuration's (details in train.log)."""


def _data_note(event: dict) -> str | None:
    """From the setup event: how many rows were skipped or cut to train.max_seq_len, with the first reason."""
    stats = event.get("stats") if event["type"] == "setup" else None
    if not stats:
        return None
    parts = []
    skipped, truncated = stats.get("skipped", 0), stats.get("truncated", 0)
    if skipped:
        first = stats.get("skipped_examples") or ["no reason kept"]
        parts.append(f"{skipped} row{'s' * (skipped != 1)} skipped (first: {first[0]})")
    if truncated:
        parts.append(f"{truncated} row{'s' * (truncated != 1)} longer than train.max_seq_len="
                     f"{stats.get('max_seq_len')} tokens cut to it (the rest is not trained)")
    return "; ".join(parts) or None


def _progress_line(event: dict) -> str | None:
    kind = event["type"]
    if kind == "log":
        parts = [f"step {event['step']}/{event.get('total') or '?'}", f"loss {event['loss']:.4f}"]
        if event.get("reward_margin") is not None:  # preference objectives
            parts.append(f"margin {event['reward_margin']:.3f}")
        if event.get("reward_accuracy") is not None:
            parts.append(f"acc {event['reward_accuracy']:.2f}")
        if event.get("tokens_per_second"):
            parts.append(f"{event['tokens_per_second']:.0f} tok/s")
        if event.get("eta_seconds") is not None:
            parts.append(f"eta {int(event['eta_seconds'])}s")
        return "  ".join(parts)
    if kind == "eval":
        extra = "".join(f"  {k} {event[k]:.3f}" for k in ("eval_reward_margin", "eval_reward_accuracy") if k in event)
        return f"step {event['step']}  eval_loss {event['eval_loss']:.4f}{extra}"
    if kind == "state":
        status = RunStatus(event["state"])  # queued says nothing yet; run_headless raises a failure instead
        return f"[{status}] {event['message']}".rstrip() if status.working or status.has_result else None
    if kind == "setup":
        return f"{event['rows']} training rows, {event['eval_rows']} eval rows, {event['total_steps']} steps"
    return None
