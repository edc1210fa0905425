"""Checkpoints as results: every Trainer checkpoint of a run also holds the trained result at that step.

``RUN@N`` names the result of run folder RUN at optimizer step N, wherever a run folder is taken (chat, export,
eval, the Chat tab's panes)::

    runs/lora-identity/checkpoints/checkpoint-40/           Trainer's checkpoint (for resume; kept 2 at a time)
    runs/lora-identity/checkpoints/checkpoint-40/result/    the method's result at step 40 (safetensors only)

    python -m studio chat runs/lora-identity@40 "Who are you?"
    for c in list_checkpoints("runs/lora-identity"):
        print(c.step, c.loss, c.eval_loss)

Trainer's own files beside ``result/`` include pickles (optimizer and RNG state), which the studio never loads,
so the result is written apart, in the method's own format, when the checkpoint is saved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from studio import methods, process, runs
from studio.config import ConfigError, MethodSpec

__all__ = ["Checkpoint", "CheckpointResults", "split", "list_checkpoints", "result_folder", "targets", "RESULT_DIR"]

RESULT_DIR = "result"
_AT = re.compile(r"^(?P<run>.+)@(?P<step>\d+)$")


@dataclass
class Checkpoint:
    """One saved checkpoint of a run that holds a result."""

    step: int
    path: Path
    loss: float | None = None
    """the last logged train loss at or before this step"""
    eval_loss: float | None = None
    """the eval loss logged at this step, if the run evaluated there"""

    @property
    def target(self) -> str:
        """The ``RUN@N`` name of this checkpoint's result."""
        return f"{self.path.parent.parent}@{self.step}"

    def label(self) -> str:
        """A short line for pickers: run @ step N · loss · eval loss."""
        parts = [f"{self.path.parent.parent.name} @ step {self.step}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"eval {self.eval_loss:.4f}")
        return " · ".join(parts)


def split(target: str | Path) -> tuple[Path, int | None]:
    """``"runs/x@40"`` -> (runs/x, 40); a plain run folder -> (it, None)."""
    text = str(target)
    found = _AT.match(text)
    if found and not Path(text).exists():
        return Path(found["run"]), int(found["step"])
    return Path(text), None


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The run's checkpoints that hold a result, oldest first, with the losses logged at them."""
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints"
    found = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        step = path.name.rpartition("-")[2]
        if step.isdigit() and (path / RESULT_DIR / methods.RESULT_FILE).is_file():
            found.append(Checkpoint(int(step), path))
    found.sort(key=lambda c: c.step)
    if found:
        rows = runs.read_metrics(run_dir)
        for c in found:
            losses = [r["loss"] for r in rows if r.get("loss") is not None and r["step"] <= c.step]
            evals = [r["eval_loss"] for r in rows if r.get("eval_loss") is not None and r["step"] == c.step]
            c.loss = losses[-1] if losses else None
            # the first: under train.keep_best the final evaluation of the kept weights is logged at the last step too
            c.eval_loss = evals[0] if evals else None
    return found


def result_folder(run_dir: str | Path, step: int) -> Path:
    """The result folder of ``run_dir`` at ``step``.

    Raises:
        ConfigError: no checkpoint at that step holds a result (the line names the steps that do).
    """
    folder = Path(run_dir) / "checkpoints" / f"checkpoint-{step}" / RESULT_DIR
    if (folder / methods.RESULT_FILE).is_file():
        return folder
    have = ", ".join(str(c.step) for c in list_checkpoints(run_dir)) or "none"
    raise ConfigError(f"{run_dir}@{step}: no checkpoint at step {step} with a result (steps with one: {have})")


def targets(run_dirs: list[str | Path]) -> list[tuple[str, str]]:
    """(label, ``RUN@N``) for every checkpoint of the given runs, for a picker."""
    return [(c.label(), c.target) for run_dir in run_dirs for c in list_checkpoints(run_dir)]


class CheckpointResults(TrainerCallback):
    """Writes the method's result into each checkpoint Trainer saves (main process, unsharded runs).

    Args:
        spec: the run's MethodSpec (the result's format and knobs).
    """

    def __init__(self, spec: MethodSpec):
        self.spec = spec

    def on_save(self, args, state, control, model=None, **kw):
        sharded = bool(getattr(args, "fsdp", None)) or bool(getattr(args, "deepspeed", None))
        if model is None or sharded or not process.is_main_process():
            return  # a shard holds part of the weights; the final save gathers them instead
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            runs.replace_folder(checkpoint / RESULT_DIR, lambda tmp: methods.save_result(model, self.spec, tmp))
