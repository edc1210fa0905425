"""Compare runs: one row per run with only the settings that differ between them, and how each ended.

    headers, rows = compare_runs(["runs/a", "runs/b"])
    # ["run", "method.r", "train.learning_rate", "final loss", "eval loss", "eval rouge_l (tuned)", "train s"]

Settings that every chosen run shares are left out, so the table says what was varied and what it gave.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio import runs

__all__ = ["compare_runs", "flat_settings", "eval_scores"]

_SKIP = ("train.run_name", "train.output_dir")
"""settings that differ between any two runs without saying anything about them"""


def flat_settings(config: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"section.key": value}`` (lists as text, so they compare and show)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_settings(value, f"{name}."))
        else:
            out[name] = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    return out


def eval_scores(run_dir: str | Path) -> dict[str, float]:
    """The last evaluation's summary scores (eval.jsonl): ``{"rouge_l (tuned)": 0.41, ...}``; {} when none."""
    path = Path(run_dir) / "eval.jsonl"
    try:
        last = path.read_text(encoding="utf-8").strip().splitlines()[-1]
        summary = json.loads(last).get("summary") or {}
    except (OSError, IndexError, ValueError, AttributeError):
        return {}
    out = {}
    for pane, scores in summary.items():
        if isinstance(scores, dict):
            out.update({f"{k} ({pane})": v for k, v in scores.items() if isinstance(v, (int, float))})
    return out


def compare_runs(run_dirs: list[str | Path]) -> tuple[list[str], list[list]]:
    """(headers, rows): run, the differing settings, final train/eval loss, eval scores, training seconds."""
    loaded = [runs.load_run(Path(d)) for d in run_dirs]
    settings = [flat_settings(r.config.to_dict()) if r.config else {} for r in loaded]
    keys = sorted({k for s in settings for k in s} - set(_SKIP))
    differ = [k for k in keys if len({json.dumps(s.get(k), default=str) for s in settings}) > 1]
    scores = [eval_scores(r.path) for r in loaded]
    score_keys = sorted({k for s in scores for k in s})
    headers = ["run", *differ, "final loss", "eval loss", *score_keys, "train s"]
    rows = []
    for run, flat, score in zip(loaded, settings, scores):
        s = run.state
        rows.append([run.name, *(flat.get(k) for k in differ), s.get("final_loss"), s.get("final_eval_loss"),
                     *(score.get(k) for k in score_keys), s.get("train_seconds")])
    return headers, rows
