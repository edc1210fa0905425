"""The Chat tab's Benchmarks accordion: harness tasks on the base, the tuned run and the compared runs, as a
table and a bar chart with standard errors; and a pairwise judge of tuned against base answers.

Both run on the chat's own engine (``studio.bench``, ``studio.judge``), so no second copy of the weights is
loaded. The chat tab hands in its ``open_panes`` when it wires the panel, so this module needs nothing from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from studio import chat
from studio import bench, faults, judge
from studio.config import ConfigError
from studio.evaluate import EvalItem
from studio.ui import paths, plots

__all__ = ["BenchPanel", "build_bench_panel", "wire_bench_panel", "run_benchmarks", "judge_answers", "bench_frame",
           "bench_chart"]

_JUDGE_COLUMNS = ["prompt", "tuned answer", "other answer", "outcome for tuned", "judge (tuned shown as A)",
                  "judge (tuned shown as B)"]


@dataclass
class BenchPanel:
    tasks: gr.CheckboxGroup
    more: gr.Textbox
    limit: gr.Slider
    run: gr.Button
    table: gr.Dataframe
    chart: gr.Plot
    summary: gr.Markdown
    prompts: gr.Textbox
    judge_model: gr.Textbox
    template: gr.Textbox
    judge: gr.Button
    verdicts: gr.Dataframe
    judged: gr.Markdown


def bench_frame(report: bench.BenchReport) -> pd.DataFrame:
    """task, metric, then ``value ± stderr`` per model."""
    rows = []
    for task, metric in report.rows():
        cells = [report.get(m, task, metric) for m in report.models]
        rows.append([task, metric] + [f"{c.value:.3f} ± {c.stderr:.3f}" if c and c.stderr is not None
                                      else (f"{c.value:.3f}" if c else "–") for c in cells])
    return pd.DataFrame(rows, columns=["task", "metric", *report.models])


def bench_chart(report: bench.BenchReport) -> go.Figure:
    """Grouped bars: one group per task and metric, one bar per model, the standard error as its whisker."""
    fig = go.Figure()
    keys = report.rows()
    labels = [f"{t} {m}" for t, m in keys]
    for model in report.models:
        cells = [report.get(model, t, m) for t, m in keys]
        fig.add_trace(go.Bar(name=model, x=labels, y=[c.value if c else None for c in cells],
                             error_y=dict(type="data", array=[(c.stderr or 0) if c else 0 for c in cells])))
    fig.update_layout(barmode="group", height=320, margin=dict(l=50, r=20, t=40, b=60), title="scores ± stderr",
                      uirevision="bench", legend=dict(orientation="h", y=1.1))
    return fig


def _task_list(tasks: list[str] | None, more: str | None) -> list[str]:
    typed = [t.strip() for t in (more or "").replace("\n", ",").split(",") if t.strip()]
    for t in typed:
        if t.endswith((".yaml", ".yml")):
            paths.check(t, "task file")  # a typed path is read only under the allowed folders
    return list(tasks or []) + typed


def _panes(opener: Callable, run_dir: str, compare: list[str] | None) -> tuple:
    engine, names, notes = opener("", [run_dir, *(compare or [])])
    if names[0] is None:
        raise ConfigError(f"{Path(run_dir).name} cannot answer on this base")
    panes = {"base": None, "tuned": names[0]}
    panes.update({n: n for n in names[1:] if n})
    return engine, panes, notes


def run_benchmarks(tasks: list[str] | None, more: str | None, limit: float | None, run_dir: str | None,
                   compare: list[str] | None = None, *, opener: Callable,
                   progress=gr.Progress(track_tqdm=True)) -> tuple[pd.DataFrame, go.Figure, str]:
    """Run the chosen harness tasks on base, tuned and the compared runs; save bench.json in the tuned run.

    Args:
        tasks: shipped task names ticked; more: other task names or task .yaml paths, comma-separated.
        limit: examples per task (0: all); run_dir: the Chat tab's tuned run; compare: its compared runs.
        opener: the chat tab's ``open_panes`` (the app's one engine with these runs loaded).

    Returns:
        (table, bar chart, one Markdown line: what ran and where it was saved, or what went wrong).
    """
    empty = pd.DataFrame(columns=["task", "metric"]), plots.empty("scores ± stderr")
    if not run_dir:
        return *empty, "Pick a tuned run above to benchmark it against its base."
    busy = chat.training_busy_message()
    if busy:
        return *empty, busy
    try:
        resolved = bench.resolve_tasks(_task_list(tasks, more))
        engine, panes, notes = _panes(opener, run_dir, compare)
        report = bench.bench(engine, panes, resolved, int(limit) or None,
                             lambda f, text: progress(f, desc=text))
        saved = report.save(Path(run_dir) / bench.BENCH_FILE)
    except ConfigError as err:
        return *empty, "**Cannot benchmark:** " + "; ".join(err.problems)
    except Exception as err:  # noqa: BLE001 - the page shows one line, not a traceback
        return *empty, f"**Benchmark failed:** {faults.one_line(err)}"
    n = next((s.n for s in report.scores if s.n), "all")
    return bench_frame(report), bench_chart(report), " ".join(
        [f"{', '.join(report.tasks)} on {', '.join(report.models)}, {n} examples per task · saved `{saved}`", *notes])


def judge_answers(prompts: str | None, judge_model: str | None, template: str | None, run_dir: str | None,
                  compare: list[str] | None = None, *, opener: Callable,
                  max_new_tokens: int = 96) -> tuple[pd.DataFrame, str]:
    """Answer the prompts with the tuned run and the base (or the first compared run) and judge each pair twice.

    Returns:
        (one row per prompt: both answers, the outcome and the judge's two one-line reasons; the rates line).
    """
    empty = pd.DataFrame(columns=_JUDGE_COLUMNS)
    if not run_dir:
        return empty, "Pick a tuned run above to judge it."
    busy = chat.training_busy_message()
    if busy:
        return empty, busy
    try:
        items = [EvalItem(line.strip()) for line in (prompts or "").splitlines() if line.strip()]
        if not items:
            raise ConfigError("no prompts: type some, one per line")
        who = (judge_model or "base").strip()
        who = who if who == "base" else paths.check_model(who, "judge model")
        engine, names, _ = opener("", [run_dir, *(compare or [])[:1]])
        report = judge.judge_run(run_dir, items, judge=who, other=(compare or [None])[0], engine=engine,
                                 pane=names[0], template=template or judge.DEFAULT_PROMPT,
                                 max_new_tokens=max_new_tokens)
    except ConfigError as err:
        return empty, "**Cannot judge:** " + "; ".join(err.problems)
    except Exception as err:  # noqa: BLE001 - the page shows one line, not a traceback
        return empty, f"**Judging failed:** {faults.one_line(err)}"
    rows = [[r["prompt"], r["answers"][report.first], r["answers"][report.second], r["outcome"],
             *(f"{v['winner'] or 'no verdict'}: {v['reason']}" for v in r["verdicts"])] for r in report.rows]
    rates = report.rates()
    return pd.DataFrame(rows, columns=_JUDGE_COLUMNS), (
        f"**{report.first}** against **{report.second}** (judge: {report.judge}): win {rates['win']:.0%}, "
        f"tie {rates['tie']:.0%}, loss {rates['loss']:.0%} · saved `{Path(run_dir) / judge.JUDGE_FILE}`")


def build_bench_panel() -> BenchPanel:
    """The Benchmarks accordion: tasks, limit, run button, table beside chart; the judge below."""
    with gr.Accordion("Benchmarks", open=False):
        with gr.Row():
            tasks = gr.CheckboxGroup(list(bench.local_tasks()), value=["studio_mc"], label="shipped tasks",
                                     elem_id="bench-tasks", info="lm-evaluation-harness tasks with local data")
            more = gr.Textbox(label="more tasks", elem_id="bench-more", placeholder="hellaswag, /path/to/task.yaml",
                              info="harness task names (their data come from the dataset hub) or task .yaml files")
            limit = gr.Slider(0, 200, value=8, step=1, precision=0, label="examples per task", elem_id="bench-limit",
                              info="0: all; a few give a quick look")
        run = gr.Button("Benchmark base vs tuned", variant="primary", elem_id="bench-run")
        with gr.Row():
            table = gr.Dataframe(interactive=False, wrap=True, elem_id="bench-table")
            chart = gr.Plot(plots.empty("scores ± stderr"), show_label=False, elem_id="bench-chart")
        summary = gr.Markdown(elem_id="bench-summary")
        with gr.Accordion("Judge: which answer is better", open=False):
            prompts = gr.Textbox(label="prompts", lines=3, elem_id="judge-prompts", placeholder="Who are you?")
            with gr.Row():
                judge_model = gr.Textbox("base", label="judge model", elem_id="judge-model",
                                         info="'base' (the run's base: a weak judge, no second model) or a model "
                                              "folder")
                judge_btn = gr.Button("Judge tuned vs base", elem_id="judge-run")
            template = gr.Textbox(judge.DEFAULT_PROMPT, label="judge prompt", lines=8, elem_id="judge-template",
                                  info="what the judge reads, once per order; keep {question} {answer_a} {answer_b}")
            verdicts = gr.Dataframe(headers=_JUDGE_COLUMNS, interactive=False, wrap=True, elem_id="judge-table")
            judged = gr.Markdown(elem_id="judge-summary")
    return BenchPanel(tasks, more, limit, run, table, chart, summary, prompts, judge_model, template, judge_btn,
                      verdicts, judged)


def wire_bench_panel(panel: BenchPanel, run: gr.Dropdown, compare: gr.Dropdown, opener: Callable) -> None:
    """The Benchmark and Judge buttons on the Chat tab's run and compared runs (``opener``: its open_panes)."""
    # one at a time: they hold the engine's lock for minutes, and chats queue behind them
    panel.run.click(partial(run_benchmarks, opener=opener), [panel.tasks, panel.more, panel.limit, run, compare],
                    [panel.table, panel.chart, panel.summary], concurrency_limit=1, concurrency_id="bench",
                    api_visibility="private")
    panel.judge.click(partial(judge_answers, opener=opener),
                      [panel.prompts, panel.judge_model, panel.template, run, compare],
                      [panel.verdicts, panel.judged], concurrency_limit=1, concurrency_id="bench",
                      api_visibility="private")
