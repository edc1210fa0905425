"""The run folder: one folder per run under ``train.output_dir`` (``runs/`` by default).

A run started from the CLI and one started from the UI are the same thing on disk, so both list
the same way::

    runs/<name>/config.yaml      the exact RunConfig
    runs/<name>/state.json       status, progress and final figures (written atomically)
    runs/<name>/metrics.jsonl    one JSON object per logged step, appended and flushed as training goes
    runs/<name>/adapter/         the trained result (methods.save_result)
    runs/<name>/tokenizer/       the tokenizer
    runs/<name>/checkpoints/     Trainer checkpoints, for resume
    runs/<name>/README.md, train.log

    for run in list_runs("runs"):
        print(run.summary_line())
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.config import ConfigError, RunConfig
from studio.status import RunStatus

__all__ = [
    "Run",
    "sanitize_name",
    "new_run_dir",
    "write_state",
    "read_state",
    "append_metrics",
    "read_metrics", "read_jsonl",
    "list_runs",
    "load_run",
    "loss_curve",
    "folder_bytes",
    "last_checkpoint",
    "write_model_card",
    "replace_folder",
]

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_name(name: str) -> str:
    """A run name that is one plain folder name: no separators, no leading dots, nothing outside runs/.

    >>> sanitize_name("../x")
    'x'
    """
    text = _NAME_OK.sub("-", str(name).strip())
    text = re.sub(r"-{2,}", "-", text).strip(".-")
    text = re.sub(r"\.{2,}", ".", text)  # no '..' anywhere, even inside
    return text[:80] or "run"


def new_run_dir(root: str | Path, name: str, *, exist_ok: bool = False) -> Path:
    """Create ``root/<sanitised name>`` (suffixing -2, -3... when taken) and return it.

    Raises:
        ConfigError: when the resulting folder would lie outside ``root`` (it never should).
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    base = sanitize_name(name)
    path, n = root / base, 1
    while path.exists() and not exist_ok:
        n += 1
        path = root / f"{base}-{n}"
    if path.resolve().parent != root.resolve():
        raise ConfigError(f"train.run_name: {name!r} would write outside {root}")
    path.mkdir(parents=True, exist_ok=exist_ok)
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def read_state(run_dir: str | Path) -> dict:
    """The run's state.json, or {} when it is missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / "state.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_state(run_dir: str | Path, **updates: Any) -> dict:
    """Merge ``updates`` into state.json and write it atomically (tmp + rename); returns the new state."""
    state = {**read_state(run_dir), **updates}
    _atomic_write(Path(run_dir) / "state.json", json.dumps(state, indent=1, default=str))
    return state


def append_metrics(run_dir: str | Path, row: dict) -> None:
    """Append one row to metrics.jsonl and flush it, so a crash loses nothing already logged."""
    with open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=float) + "\n")
        fh.flush()


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every row of metrics.jsonl; a line cut short by a crash is skipped."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def read_jsonl(path: str | Path) -> list[dict]:
    """Every JSON object line of a run-folder log ([] when there is no file); a line cut short is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def folder_bytes(path: str | Path) -> int:
    """Total size of the files under ``path`` (0 when missing)."""
    path = Path(path)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete Trainer checkpoint (one whose trainer_state.json was written), or None.

    A checkpoint cut short (a crash or a full disk while saving) has no trainer_state.json, which
    the Trainer writes last, so the one before it is used.
    """
    folder = Path(run_dir) / "checkpoints"
    found = []
    for p in folder.glob("checkpoint-*") if folder.is_dir() else []:
        step = p.name.rpartition("-")[2]
        if step.isdigit() and (p / "trainer_state.json").is_file():
            found.append((int(step), p))
    return max(found)[1] if found else None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _status(state: dict) -> RunStatus:
    status = RunStatus(state.get("status", RunStatus.UNKNOWN))
    if status.busy and not _pid_alive(state.get("pid")):  # still going, says the file; its process is gone
        return RunStatus.INTERRUPTED
    return status


@dataclass
class Run:
    """One run folder, as read from disk."""

    name: str
    path: Path
    config: RunConfig | None
    state: dict = field(default_factory=dict)
    adapter_bytes: int = 0
    config_problem: str | None = None

    @property
    def status(self) -> RunStatus:
        """The state's status, or INTERRUPTED when it says busy but its process is gone."""
        return _status(self.state)

    @property
    def metrics(self) -> list[dict]:
        """Rows of metrics.jsonl (read on each access: the file grows while the run trains)."""
        return read_metrics(self.path)

    def summary_line(self) -> str:
        """One line: name, status, method, steps, final loss, adapter size."""
        method = self.config.method.name if self.config else "?"
        step, total = self.state.get("step", 0), self.state.get("total_steps") or "?"
        loss = self.state.get("final_loss")
        loss_text = f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "loss -"
        size = f"{self.adapter_bytes / 2**20:.1f} MB" if self.adapter_bytes else "no adapter"
        return f"{self.name:<32} {self.status:<11} {method:<10} step {step}/{total:<6} {loss_text:<12} {size}"


def load_run(path: str | Path) -> Run:
    """Read one run folder. A missing or broken config.yaml is reported in ``config_problem``, not raised."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run folder")
    config, problem = None, None
    try:
        config = RunConfig.load(path / "config.yaml")
    except ConfigError as err:
        problem = "; ".join(err.problems)
    state = read_state(path)
    size = state.get("adapter_bytes") or folder_bytes(path / "adapter")
    return Run(name=path.name, path=path, config=config, state=state, adapter_bytes=int(size or 0),
               config_problem=problem)


def list_runs(root: str | Path = "runs") -> list[Run]:
    """Every run folder under ``root`` (those with a config.yaml or state.json), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [load_run(p) for p in root.iterdir()
             if p.is_dir() and ((p / "state.json").is_file() or (p / "config.yaml").is_file())]
    return sorted(found, key=lambda r: (r.state.get("started") or 0, r.name), reverse=True)


def loss_curve(run: Run | str | Path) -> dict[str, list]:
    """Training and evaluation losses by step: {"step", "loss", "eval_step", "eval_loss"}.

    Steps logged again after a resume from an earlier checkpoint replace the first logging of them.
    """
    rows = read_metrics(run.path if isinstance(run, Run) else run)
    train = {r["step"]: r["loss"] for r in rows if isinstance(r.get("loss"), (int, float))}
    evals = {r["step"]: r["eval_loss"] for r in rows if isinstance(r.get("eval_loss"), (int, float))}
    return {"step": sorted(train), "loss": [train[s] for s in sorted(train)],
            "eval_step": sorted(evals), "eval_loss": [evals[s] for s in sorted(evals)]}


def write_model_card(run_dir: str | Path, cfg: RunConfig, state: dict) -> Path:
    """Write README.md: what was trained, on what data, with which settings, and how it ended."""
    t, m = cfg.train, cfg.method
    knobs = ", ".join(f"{k}={v}" for k, v in m.knobs.items()) or "defaults"

    def fmt(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))

    lines = [
        f"# {Path(run_dir).name}", "",
        f"A {m.name} fine-tune of `{cfg.model.id}`, made with PEFT Studio.", "",
        "## Method", "", f"- method: {m.name} ({knobs})", "",
        "## Data", "",
        f"- source: `{cfg.data.path}` (format {cfg.data.format}, loss on {cfg.data.train_on} tokens,"
        f" packing {'on' if cfg.data.packing else 'off'})",
        f"- validation: {cfg.data.val_path or cfg.data.val_fraction}", "",
        "## Settings", "",
        f"- steps: {t.max_steps or f'{t.epochs} epochs'}, micro-batch {t.micro_batch_size}"
        f" x accumulation {t.grad_accum}, max_seq_len {t.max_seq_len}",
        f"- learning rate {t.learning_rate or 'method default'}, {t.scheduler} schedule, warmup {t.warmup_ratio},"
        f" optimizer {t.optimizer}, precision {t.precision}, seed {t.seed}", "",
        "## Result", "",
        f"- status: {state.get('status')}, step {state.get('step')}/{state.get('total_steps')}",
        f"- final train loss: {fmt(state.get('final_loss'))};"
        f" final eval loss: {fmt(state.get('final_eval_loss'))}",
        f"- train time: {fmt(state.get('train_seconds'))} s;"
        f" adapter size: {(state.get('adapter_bytes') or 0) / 2**20:.1f} MB",
        "", "Load it with `studio.methods.load_result(base_model, folder)`, or chat with it:",
        f"`python -m studio chat {run_dir} --prompt \"Hello\"`.", "",
    ]
    path = Path(run_dir) / "README.md"
    _atomic_write(path, "\n".join(lines))
    return path


def replace_folder(target: Path, write) -> None:
    """Write a folder under a temporary name, then swap it in, so a crash never leaves half a folder.

    A kill while writing leaves ``<name>.tmp`` beside the intact previous folder (or none); a kill in the
    instant between the two renames leaves the previous one as ``<name>.old``, put back on the next call.
    """
    import shutil

    tmp = target.with_name(target.name + ".tmp")
    old = target.with_name(target.name + ".old")
    if old.is_dir() and not target.exists():
        old.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def now() -> float:
    """Wall-clock time stamp used in state.json."""
    return round(time.time(), 3)
