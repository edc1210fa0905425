"""Runs tab: every run folder (made here or by the CLI) with its settings and results; overlay loss curves;
load a run's settings back into the tabs; the run as YAML and as the equivalent ``python -m studio train``."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from studio import compare, hw_sampler, runs
from studio import forgetting
from studio.config import ConfigError, RunConfig
from studio.ui import export_panel, plots, state
from studio.ui.form import Form

__all__ = ["RunsTab", "build_runs_tab", "runs_table", "run_names", "overlay", "compare_table", "run_yaml",
           "train_command",
           "COLUMNS"]

COLUMNS = ["run", "status", "method", "data", "settings", "final loss", "eval loss", "after tuning (tuned - base)",
           "train time", "peak memory", "adapter"]


@dataclass
class RunsTab:
    refresh: gr.Button
    table: gr.Dataframe
    compare: gr.Dropdown
    chart: gr.Plot
    run: gr.Dropdown
    load: gr.Button
    message: gr.Markdown
    yaml: gr.Code
    command: gr.Code
    export: export_panel.ExportPanel
    series: gr.Dropdown
    diff: gr.Dataframe


def _root(root: str | None) -> str:
    return root or str(state.get().runs_root)


def _num(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "–"


def _settings(cfg: RunConfig | None) -> str:
    if cfg is None:
        return "–"
    # the numbers only (rank, alpha...): switches and lists make the column unreadably wide
    knobs = ", ".join(f"{k}={v:g}" for k, v in cfg.method.knobs.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool))
    t = cfg.train
    steps = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epochs"
    return f"{knobs}; {steps}, batch {t.micro_batch_size}×{t.grad_accum}, lr {t.learning_rate or 'default'}"


def _row(run) -> list:
    cfg, s = run.config, run.state
    return [run.name, run.status.value, cfg.method.name if cfg else "?", Path(cfg.data.path).name if cfg else "?",
            _settings(cfg), _num(s.get("final_loss"), ".4f"), _num(s.get("final_eval_loss"), ".4f"),
            forgetting.short(forgetting.read(run.path)),  # train.eval_after: what tuning cost beside what it won
            f"{_num(s.get('train_seconds'), '.0f')} s", f"{_num((s.get('peak_memory_bytes') or 0) / 1e9, '.2f')} GB",
            f"{run.adapter_bytes / 2**20:.1f} MB" if run.adapter_bytes else "–"]


def runs_table(root: str | None = None) -> list[list]:
    """One row per run folder, newest first (columns: COLUMNS)."""
    return [_row(r) for r in runs.list_runs(_root(root))]


def run_names(root: str | None = None) -> list[str]:
    return [r.name for r in runs.list_runs(_root(root))]


def overlay(names: list[str] | None, root: str | None = None, series: str = "loss") -> go.Figure:
    """One series (plots.OVERLAY_SERIES) of the chosen runs in one chart; loss shows eval loss too."""
    if not names:
        return plots.overlay_chart({})
    # a name is a folder in the runs folder, never a path elsewhere
    folders = {n: Path(_root(root)) / Path(n).name for n in names}
    if series == "loss":
        return plots.overlay_chart({n: runs.loss_curve(f) for n, f in folders.items()})
    key = next((k for k, label in plots.SERIES.items() if label == series), None)
    if key is not None:  # a metrics.jsonl column, by step
        lines = {}
        for n, f in folders.items():
            have = [r for r in runs.read_metrics(f) if isinstance(r.get(key), (int, float))]
            lines[n] = ([r["step"] for r in have], [r[key] for r in have])
        return plots.series_overlay(lines, series, "step")
    lines = {}
    for n, f in folders.items():
        for name, xy in plots.hardware_series(hw_sampler.read_hardware(f)).items():
            if name.endswith(series):
                lines[f"{n} · {name}" if name != series else n] = xy
    return plots.series_overlay(lines, series, "seconds")


def compare_table(names: list[str] | None, root: str | None = None) -> dict:
    """The chosen runs side by side: only the settings that differ, final losses, eval scores, time."""
    if not names:
        return {"headers": ["run"], "data": []}
    headers, rows = compare.compare_runs([Path(_root(root)) / Path(n).name for n in names])
    shown = [[round(v, 4) if isinstance(v, float) else ("–" if v is None else v) for v in row] for row in rows]
    return {"headers": headers, "data": shown}


def _config(name: str, root: str | None) -> RunConfig:
    path = Path(_root(root)) / Path(name).name / "config.yaml"
    return RunConfig.load(path)


def run_yaml(name: str | None, root: str | None = None) -> str:
    """The run's config.yaml text ('' when none is picked)."""
    if not name:
        return ""
    try:
        return _config(name, root).to_yaml()
    except ConfigError as err:
        return "# " + "; ".join(err.problems)


def train_command(name: str | None, root: str | None = None) -> str:
    """The headless command that trains the same run again (into a new folder)."""
    if not name:
        return ""
    config = Path(_root(root)) / Path(name).name / "config.yaml"
    return (f"python -m studio train {shlex.quote(str(config))} "
            f"--set {shlex.quote(f'train.run_name={Path(name).name}-again')}")


def build_runs_tab() -> RunsTab:
    refresh = gr.Button("↻ Refresh", size="sm", elem_id="runs-refresh")
    table = gr.Dataframe(runs_table(), headers=COLUMNS, interactive=False, wrap=True, elem_id="runs-table")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                compare = gr.Dropdown(run_names(), multiselect=True, label="compare runs", elem_id="runs-compare",
                                      scale=3)
                series = gr.Dropdown(list(plots.OVERLAY_SERIES), value="loss", label="series", scale=1,
                                     elem_id="runs-series")
            chart = gr.Plot(plots.overlay_chart({}), show_label=False, elem_id="runs-chart")
            table_diff = gr.Dataframe(compare_table([]), interactive=False, label="compared (only what differs; "
                                      "click a header to sort)", elem_id="runs-diff")
        with gr.Column():
            run = gr.Dropdown(run_names(), label="run", elem_id="runs-pick")
            load = gr.Button("Load its settings into the tabs", elem_id="runs-load")
            message = gr.Markdown()
            yaml = gr.Code(label="as YAML", language="yaml", elem_id="runs-yaml")
            command = gr.Code(label="as a command", language="shell", elem_id="runs-command")
            export = export_panel.build_export_panel()
    return RunsTab(refresh, table, compare, chart, run, load, message, yaml, command, export, series, table_diff)


def wire_runs_tab(tab: RunsTab, form: Form, tab_item: gr.Tab) -> None:
    """Refresh (also when the tab opens), overlay, YAML / command, load into the tabs."""
    def _refresh():
        names = run_names()
        return runs_table(), gr.update(choices=names), gr.update(choices=names)

    def _load(name):
        if not name:
            return ["Pick a run first."] + [gr.update() for _ in form.components]
        try:
            cfg = _config(name, None)
        except ConfigError as err:
            return ["**Cannot load:** " + "; ".join(err.problems)] + [gr.update() for _ in form.components]
        return [f"Loaded the settings of **{name}**; the other tabs show them now."] + form.from_config(cfg)

    kw = dict(api_visibility="private", concurrency_limit=None)
    for trigger in (tab.refresh.click, tab_item.select):
        trigger(_refresh, None, [tab.table, tab.compare, tab.run], **kw)
    for picker in (tab.compare, tab.series):
        picker.change(lambda names, series: overlay(names, None, series), [tab.compare, tab.series], tab.chart,
                      show_progress="hidden", **kw)
    tab.compare.change(compare_table, tab.compare, tab.diff, show_progress="hidden", **kw)
    tab.run.change(lambda n: (run_yaml(n), train_command(n)), tab.run, [tab.yaml, tab.command], **kw)
    tab.load.click(_load, tab.run, [tab.message] + form.components, **kw)
    export_panel.wire_export_panel(tab.export, tab.run)
