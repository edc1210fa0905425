"""What a failed run tells the person: one line, and for the faults they can act on, what to do.

Kept apart from the training loop and free of heavy imports, so the CLI can word any error (even one from a
broken torch install) the way a failed run does.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from studio.config import ConfigError, TrainSpec

__all__ = ["TrainingError", "OutOfMemory", "DiskFull", "one_line", "is_oom", "is_disk_full", "explain",
           "drop_partial_checkpoints"]


class TrainingError(ConfigError):
    """A run that ended as failed for a reason the person can act on (the message says how)."""


class OutOfMemory(TrainingError):
    """The run ran out of memory; the message says what to change, and ``retry_smaller()`` offers a retry."""


class DiskFull(TrainingError):
    """A write failed for want of space; the message says whether a checkpoint is left to resume from."""


_NO_SPACE = ("no space left on device", "disk quota exceeded", "os error 28")
# torch.save reports a failed write without the OS reason; with the disk (nearly) full it is that
_WRITE_FAILED = ("iostream error", "inline_container", "failed writing", "file write failed", "i/o error")


def one_line(err: BaseException) -> str:
    """``Type: first line`` of an error (a ConfigError's problems joined), at most 400 characters of it."""
    if isinstance(err, ConfigError):
        return "; ".join(err.problems)
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0][:400]}" if lines else type(err).__name__


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is running out of accelerator or host memory."""
    import torch

    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def _chain(err: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def is_disk_full(err: BaseException, folder: Path) -> bool:
    """Whether ``err`` (or an error it was raised from) is a write that failed for want of space.

    Python says ENOSPC; safetensors says "I/O error: No space left on device (os error 28)" in a
    SafetensorError; torch.save says only "basic_ios::clear: iostream error" or "[enforce fail at
    inline_container.cc] unexpected pos", so for those the free space left is the evidence.
    """
    seen = _chain(err)
    for e in seen:
        text = str(e).lower()
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) or any(t in text for t in _NO_SPACE):
            return True
    if any(t in str(e).lower() for e in seen for t in _WRITE_FAILED):
        try:
            return shutil.disk_usage(folder).free < 64 * 2**20
        except OSError:
            return False
    return False


def explain(err: BaseException, train: TrainSpec, run_dir: Path | None, has_checkpoint: bool) -> BaseException:
    """``err`` as the person should read it: out of memory and a full disk say what to change; others as they are."""
    if is_oom(err):
        return OutOfMemory(
            f"out of memory at train.micro_batch_size={train.micro_batch_size}, train.max_seq_len={train.max_seq_len}"
            ": use a smaller micro-batch, shorter sequences, train.gradient_checkpointing: true, or QLoRA "
            "(4-bit base); Retry smaller halves the micro-batch and doubles train.grad_accum")
    if run_dir is not None and is_disk_full(err, run_dir):
        then = ("the last complete checkpoint is intact and Resume continues from it" if has_checkpoint
                else "no checkpoint was complete, so start the run again")
        return DiskFull(f"the disk is full ({run_dir}): free some space; {then}")
    return err


def drop_partial_checkpoints(run_dir: Path, last: Path | None) -> None:
    """Remove checkpoints newer than ``last``, the last complete one: a save cut short cannot be resumed."""
    newest = int(last.name.rpartition("-")[2]) if last is not None else -1
    for folder in (run_dir / "checkpoints").glob("checkpoint-*"):
        step = folder.name.rpartition("-")[2]
        if step.isdigit() and int(step) > newest:
            shutil.rmtree(folder, ignore_errors=True)
