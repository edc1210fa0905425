"""What tuning cost: after a run, the base and the tuned model answer general prompts and chosen benchmarks.

    train:
      eval_after: [general, studio_mc]   # in a run config: checked when the run finishes

``general`` is a shipped set of everyday questions with short answers (presets/data/general_prompts.jsonl),
scored with ``studio.metrics``; the other names are benchmarks from presets/bench run through the harness.
Both models answer from one engine (the run's adapter on and off). The result goes to the run folder as
``after_eval.json``; the Runs tab shows its changes beside the loss, so a run that learnt its task and lost
some general knowledge says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from studio import bench, faults, metrics
from studio.chat import ChatEngine, GenSettings
from studio.config import ConfigError, RunConfig
from studio.evaluate import evaluate, load_prompts, mean_loss

__all__ = ["GENERAL", "GENERAL_PROMPTS", "AFTER_FILE", "SHOWN", "check", "changes", "summary_lines", "short",
           "run_after", "after_training", "read", "base_kept"]

GENERAL = "general"
GENERAL_PROMPTS = Path(__file__).resolve().parents[1] / "presets" / "data" / "general_prompts.jsonl"
AFTER_FILE = "after_eval.json"
SHOWN = ("contains", "rougeL")  # the general prompts' figures the summaries show (all are saved)


def check(engine, pane: str, names: list[str], limit: int | None = None, max_new_tokens: int = 32) -> dict:
    """Score the base and ``pane`` of ``engine`` on ``names`` ("general" and/or benchmark tasks).

    Returns:
        {"asked", "general": {"prompts", "base", "tuned", "rows"} or None, "bench": [Score dicts] or None,
        "lines": readable changes}.
    """
    out: dict = {"asked": list(names), "general": None, "bench": None}
    panes = {"base": None, "tuned": pane}
    if GENERAL in names:
        report = evaluate(engine, load_prompts(GENERAL_PROMPTS), panes, max_new_tokens=max_new_tokens)
        out["general"] = {"prompts": len(report.rows), "rows": report.rows,
                          **{p: {k: report.summary[p][k] for k in metrics.METRICS} for p in panes}}
    tasks = [n for n in names if n != GENERAL]
    if tasks:
        scores = bench.bench(engine, panes, bench.resolve_tasks(tasks), limit).scores
        out["bench"] = [asdict(s) for s in scores]
    out["lines"] = summary_lines(out)
    return out


def changes(result: dict) -> list[dict]:
    """One row per figure: {"what", "metric", "base", "tuned", "change"} (change = tuned - base)."""
    rows = []
    general = result.get("general")
    if general:
        for k in SHOWN:
            base, tuned = general["base"][k], general["tuned"][k]
            if base is not None and tuned is not None:
                rows.append({"what": "general prompts", "metric": metrics.LABELS[k], "base": base, "tuned": tuned,
                             "change": tuned - base})
    by_key: dict = {}
    for s in result.get("bench") or []:
        by_key.setdefault((s["task"], s["metric"]), {})[s["model"]] = s["value"]
    for (task, metric), v in by_key.items():
        if "base" in v and "tuned" in v:
            rows.append({"what": task, "metric": metric, "base": v["base"], "tuned": v["tuned"],
                         "change": v["tuned"] - v["base"]})
    return rows


def summary_lines(result: dict) -> list[str]:
    """``general prompts contains answer: 0.750 -> 0.500 (-0.250)``, one line per figure."""
    return [f"{r['what']} {r['metric']}: {r['base']:.3f} -> {r['tuned']:.3f} ({r['change']:+.3f})"
            for r in changes(result)]


def short(result: dict | None) -> str:
    """One compact cell for the Runs table: each figure's change, or the error, or '–'."""
    if not result:
        return "–"
    if result.get("error"):
        return "failed: " + result["error"][:80]
    return "; ".join(f"{r['what']} {r['metric']} {r['change']:+.3f}" for r in changes(result)) or "–"


def run_after(run_dir: str | Path, names: list[str] | None = None, limit: int | None = None,
              engine=None) -> dict:
    """Check a finished run (``names`` default: its ``train.eval_after``) and write ``after_eval.json``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (it has no config.yaml)")
    cfg = RunConfig.load(run_dir / "config.yaml")
    names = list(names if names is not None else cfg.train.eval_after)
    if engine is None:
        engine = ChatEngine(cfg.model)  # the base loads once; the run's adapter goes on it
        engine.add_adapter("tuned", run_dir)
    result = check(engine, "tuned", names, limit)
    _write(run_dir, result)
    return result


def after_training(run_dir: str | Path, cfg: RunConfig, log: Callable[[str], None] | None = None) -> None:
    """The post-training hook: when ``train.eval_after`` asks, check the run; a failure is recorded, not raised
    (the run itself is done and saved)."""
    if not cfg.train.eval_after:
        return
    try:
        result = run_after(run_dir, cfg.train.eval_after)
        lines = result["lines"]
    except Exception as err:  # noqa: BLE001 - the trained result stays good; say what went wrong beside it
        _write(Path(run_dir), {"asked": list(cfg.train.eval_after), "error": faults.one_line(err)})
        lines = [f"eval_after failed: {faults.one_line(err)}"]
    if log:
        for line in lines:
            log(f"eval_after: {line}")


def _write(run_dir: Path, result: dict) -> None:
    tmp = run_dir / (AFTER_FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(run_dir / AFTER_FILE)


def read(run_dir: str | Path) -> dict | None:
    """The run's ``after_eval.json``, or None when it has none (or it cannot be read)."""
    path = Path(run_dir) / AFTER_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def base_kept(engine, panes: dict, prompts: str | Path = GENERAL_PROMPTS, max_new_tokens: int = 24) -> dict:
    """How much of the base's behaviour on general prompts each pane keeps (all greedy, one batch per prompt).

    Args:
        engine: a ChatEngine with the panes' adapters loaded.
        panes: label -> engine pane (adapter name), e.g. {"plain": "plain", "replay": "replay"}.
        prompts: a prompt file (default: the shipped general prompts).
        max_new_tokens: longest answer.

    Returns:
        {"base": {...}, label: {...}} with, per model, ``same_answer`` (share of prompts answered word for word
        as the base did), ``base_answer_loss`` (token-mean loss of the base's own answers: a held-out general
        loss, 0-ish for the base when greedy), ``contains`` (share of answers containing the reference) and
        ``answers``.
    """
    items = load_prompts(prompts)
    keys = [None] + list(panes.values())
    labels = ["base"] + list(panes)
    answers: dict[str, list[str]] = {label: [] for label in labels}
    gen = GenSettings(max_new_tokens=max_new_tokens, greedy=True)
    for item in items:
        final: dict = {}
        for final in engine.stream(item.messages(), panes=keys, gen=gen):
            pass
        for label, key in zip(labels, keys):
            answers[label].append(final.get(key, "").strip())
    rows = [{"messages": item.messages() + [{"role": "assistant", "content": answer}]}
            for item, answer in zip(items, answers["base"]) if answer]
    out = {}
    for label, key in zip(labels, keys):
        with engine.using(key) as model:
            loss = mean_loss(model, engine.tokenizer, rows)
        same = sum(a == b for a, b in zip(answers[label], answers["base"])) / len(items)
        refs = [(a, i.reference) for a, i in zip(answers[label], items) if i.reference]
        contains = sum(r.lower() in a.lower() for a, r in refs) / len(refs) if refs else None
        out[label] = {"same_answer": same, "base_answer_loss": loss, "contains": contains,
                      "answers": answers[label]}
    return out
