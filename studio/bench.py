"""Benchmarks through lm-evaluation-harness, on the base and the tuned model from one copy of the weights.

    report = bench_run("runs/lora-identity", ["studio_mc", "studio_gen"], limit=8)
    print(report.table())          # also written to runs/lora-identity/bench.json

The harness gets the model object itself (``HFLM(pretrained=model)``): the chat engine's ``using(pane)``
switches the run's adapter off for the base and on for the tuned model, so both score on the same weights.
Tasks are the harness's own: a name from ``presets/bench`` (tasks written for the studio, with local data),
a path to any harness task YAML whose data are local files, or a harness task name, whose data the harness
fetches from the dataset hub (one line says so when the hub cannot be reached).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from studio.chat import ChatEngine
from studio.data import sources
from studio.config import ConfigError, RunConfig

__all__ = ["PRESET_TASKS", "BENCH_FILE", "Score", "BenchReport", "local_tasks", "task_config", "resolve_tasks",
           "harness", "bench", "bench_run"]

PRESET_TASKS = Path(__file__).resolve().parents[1] / "presets" / "bench"
BENCH_FILE = "bench.json"
_STDERR = "_stderr"


@dataclass
class Score:
    """One number the harness reported: a model's score on one metric of one task, with its standard error."""

    model: str
    task: str
    metric: str
    value: float
    stderr: float | None
    n: int | None = None  # examples scored (after --limit)


@dataclass
class BenchReport:
    """Scores of several models (base, tuned, other runs) on the same tasks."""

    models: list[str]
    tasks: list[str]
    limit: int | None = None
    scores: list[Score] = field(default_factory=list)

    def get(self, model: str, task: str, metric: str) -> Score | None:
        """The score of ``model`` on ``task``'s ``metric``, or None."""
        return next((s for s in self.scores if (s.model, s.task, s.metric) == (model, task, metric)), None)

    def rows(self) -> list[tuple[str, str]]:
        """(task, metric) pairs in the order the harness reported them."""
        return list(dict.fromkeys((s.task, s.metric) for s in self.scores))

    def table(self) -> str:
        """One line per task and metric, one column per model: ``value ± stderr``."""
        head = f"{'task':<16}{'metric':<22}" + "".join(f"{m:>20}" for m in self.models)
        lines = [head]
        for task, metric in self.rows():
            cells = [self.get(m, task, metric) for m in self.models]
            lines.append(f"{task:<16}{metric:<22}" + "".join(f"{_cell(c):>20}" for c in cells))
        n = next((s.n for s in self.scores if s.n), None)
        lines.append(f"({n} examples per task)" if n else "")
        return "\n".join(lines).rstrip()

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        data = {"models": self.models, "tasks": self.tasks, "limit": self.limit,
                "scores": [asdict(s) for s in self.scores]}
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> BenchReport:
        """A report written by ``save``."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["models"], data["tasks"], data.get("limit"), [Score(**s) for s in data["scores"]])


def _cell(s: Score | None) -> str:
    if s is None:
        return "-"
    return f"{s.value:.3f}" + (f" ± {s.stderr:.3f}" if s.stderr is not None else "")


def local_tasks(folder: str | Path = PRESET_TASKS) -> dict[str, Path]:
    """Task name -> YAML file for the harness tasks shipped in ``folder`` (presets/bench)."""
    out = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        name = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("task")
        if isinstance(name, str):
            out[name] = path
    return out


def task_config(path: str | Path) -> dict:
    """A harness task YAML as a config dict, its local ``data_files`` made absolute (they are relative to it).

    Only plain YAML is read: a task that needs the harness's ``!function`` tags goes by name instead.
    """
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not a readable task YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("task"), str):
        raise ConfigError(f"{path}: not a harness task YAML (it has no 'task: NAME')")
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        files = {split: _beside(path, f) for split, f in files.items()}
    elif files is not None:
        files = _beside(path, files)
    if files is not None:
        cfg["dataset_kwargs"] = {**cfg["dataset_kwargs"], "data_files": files}
    return cfg


def _beside(yaml_path: Path, files):
    if isinstance(files, list):
        return [_beside(yaml_path, f) for f in files]
    p = Path(files)
    p = p if p.is_absolute() else yaml_path.parent / p
    if not p.is_file():
        raise ConfigError(f"{yaml_path}: its data file {p} does not exist")
    return str(p)


def resolve_tasks(names: list[str], folder: str | Path = PRESET_TASKS) -> list[dict | str]:
    """Task names or YAML paths -> what the harness takes: config dicts for local tasks, names for the rest.

    Raises:
        ConfigError: one line per task that cannot run here (unknown, or its data on an unreachable hub).
    """
    shipped, out, problems = local_tasks(folder), [], []
    for name in [n.strip() for n in names if n and n.strip()]:
        try:
            if name.endswith((".yaml", ".yml")):
                out.append(task_config(name))
            elif name in shipped:
                out.append(task_config(shipped[name]))
            elif not sources.hub_reachable():
                problems.append(f"{name}: not a local task, and the harness fetches its data from the dataset hub, "
                                f"which is not reachable from here (local tasks: {', '.join(shipped) or 'none'}, "
                                "or a task .yaml whose data are local files)")
            else:
                out.append(name)
        except ConfigError as err:
            problems += err.problems
    if not out and not problems:
        problems.append("no tasks: name at least one (e.g. " + ", ".join(shipped or ["studio_mc"]) + ")")
    if problems:
        raise ConfigError(problems)
    return out


def harness(model, tokenizer, tasks: list[dict | str], limit: int | None = None, batch_size: int = 8) -> dict:
    """Run lm-evaluation-harness on a loaded model; returns the harness's ``results`` dict (task -> metrics)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    # indexing the harness's ~15,000 built-in tasks takes seconds: only when a task goes by name
    manager = TaskManager(include_defaults=any(isinstance(t, str) for t in tasks))
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), limit=limit, task_manager=manager,
                                      log_samples=False, bootstrap_iters=1000)
    except (KeyError, ValueError) as err:  # an unknown name or a bad task YAML
        raise ConfigError(f"the harness cannot run {_names(tasks)}: {str(err).splitlines()[0][:300]}") from None
    return out["results"]


def _names(tasks: list[dict | str]) -> str:
    return ", ".join(t["task"] if isinstance(t, dict) else t for t in tasks)


def scores_from(model: str, results: dict) -> list[Score]:
    """The harness's ``results`` as Scores: one per task and metric (``acc,none`` -> ``acc``)."""
    out = []
    for task, metrics in results.items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith(_STDERR) or not isinstance(value, (int, float)):
                continue
            se = metrics.get(f"{metric}{_STDERR},{filt}")
            label = metric if filt == "none" else f"{metric} ({filt})"
            out.append(Score(model, task, label, float(value), float(se) if isinstance(se, (int, float)) else None,
                             metrics.get("sample_len")))
    return out


def bench(engine, panes: dict, tasks: list[dict | str], limit: int | None = None,
          progress: Callable[[float, str], None] | None = None) -> BenchReport:
    """Score every pane of a chat engine on ``tasks``, one pane after the other on the engine's one model.

    Args:
        engine: a ChatEngine holding the adapters (its ``using(pane)`` sets the shared weights up for a pane).
        panes: label -> engine pane, e.g. {"base": None, "tuned": "tuned"}.
        tasks: from ``resolve_tasks``.
        limit: examples per task (None: all).
        progress: called with (fraction done, what runs now).
    """
    report = BenchReport(list(panes), [t["task"] if isinstance(t, dict) else t for t in tasks], limit)
    for i, (label, pane) in enumerate(panes.items()):
        if progress:
            progress(i / len(panes), f"{label}: {', '.join(report.tasks)}")
        with engine.using(pane) as model:
            report.scores += scores_from(label, harness(model, engine.tokenizer, tasks, limit))
    if progress:
        progress(1.0, "done")
    return report


def bench_run(run_dir: str | Path, tasks: list[str], limit: int | None = None, others: list[str] | None = None,
              engine=None, pane: str = "tuned", progress=None, save: bool = True) -> BenchReport:
    """Benchmark a run's tuned model against its base (and other runs on the same base); writes bench.json.

    ``engine`` (optional) already holds the run's adapter under the name ``pane``, e.g. the UI's shared one.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (it has no config.yaml)")
    resolved = resolve_tasks(tasks)
    if engine is None:
        engine = ChatEngine(RunConfig.load(run_dir / "config.yaml").model)
        engine.add_adapter(pane, run_dir)
    panes = {"base": None, "tuned": pane}
    for other in others or []:
        name = Path(other).name
        if name not in engine.adapters():
            engine.add_adapter(name, other)
        panes[name] = name
    report = bench(engine, panes, resolved, limit, progress)
    if save:
        report.save(run_dir / BENCH_FILE)
    return report
