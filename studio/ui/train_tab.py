"""Train tab: schedule settings, Start / Stop / Resume, and the live view of the job the core runs in its
background thread (progress with ETA, loss chart, speed and memory, log tail, result or error).

The page polls ``job.snapshot()`` / ``job.events()`` with a gr.Timer, so any number of browser tabs can
watch one run, a reload picks it back up and closing the page does not stop it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gradio as gr
import plotly.graph_objects as go
from gradio.components.plot import PlotData

from studio import runs, training, validation
from studio.config import ConfigError, RunConfig, TrainSpec
from studio.status import RunStatus
from studio.ui import paths, plots, rewards_panel, state
from studio.ui.form import Form, field_widget
from studio.ui.objective_panel import build_objective_panel

__all__ = ["TrainTab", "TrainView", "build_train_tab", "cannot_start", "start_training", "stop_training",
           "resume_training", "resumable_runs", "current", "training_view", "status", "start_from_yaml",
           "retry_training", "ran_out_of_memory"]

TICK_SECONDS = 1.0  # how often an open page polls the run, at most (see tick_seconds)
_SLOWEST_TICK = 5.0
RETRY_LABEL = "Retry smaller: half the micro-batch, twice the accumulation"
SCHEDULE_FIELDS = ("epochs", "max_steps", "learning_rate", "scheduler", "warmup_ratio", "weight_decay",
                   "max_grad_norm", "eval_steps", "save_steps", "logging_steps", "early_stopping_patience", "seed",
                   "loraplus_ratio", "neftune_alpha", "kl_to_base", "ewc", "report_to", "sample_hardware",
                   "keep_best")
_LOG_LINES = 14
_CHART_POINTS = 1000


@dataclass
class TrainTab:
    start: gr.Button
    stop: gr.Button
    resume_run: gr.Dropdown
    resume: gr.Button
    message: gr.Markdown
    progress: gr.HTML
    stats: gr.Markdown
    plot: gr.Plot
    log: gr.Textbox
    result: gr.Markdown
    timer: gr.Timer
    retry: gr.Button
    shown: gr.State  # per page: whether its timer and button are set up (see tick)
    rewards: rewards_panel.RewardsPanel | None = None


@dataclass
class TrainView:
    """What the Train tab shows for one moment of a job."""

    progress: str
    stats: str
    figure: go.Figure
    log: str
    result: str
    active: bool
    retry: bool = False
    """offer Retry smaller: the job ended out of memory"""
    next_tick: float = TICK_SECONDS
    """seconds until a page watching it should look again (see tick_seconds)"""


def current():
    """The job this process runs (started here or elsewhere in the process), or None."""
    app = state.get()
    job = training.current_job()
    return job or app.job


def cannot_start(problems: list[str]) -> str:
    """The refusal shown instead of starting: one bullet per problem."""
    return "**Cannot start:**\n" + "\n".join(f"- {p}" for p in problems)


def start_training(cfg: RunConfig) -> str:
    """Start a TrainingJob for ``cfg``; the message says where it writes or why it cannot start."""
    # runs go to the studio's runs folder only, whatever the config (or an API caller) says
    cfg.train.output_dir = str(state.get().runs_root)
    try:
        job = training.TrainingJob(paths.check_config(cfg)).start()
    except ConfigError as err:  # bad values, or what the preflight found: one line per problem
        going = current()
        hint = ["a run is training: **Queue it** (below) starts this one when it ends"] if going and going.running \
            else []
        return cannot_start(err.problems + hint)
    state.get().job = job
    return f"Started **{job.name}** in `{job.run_dir}`."


def start_from_yaml(config_yaml: str) -> str:
    """Start a run from RunConfig YAML text: the API's twin of the Start button."""
    try:
        cfg = validation.from_yaml(config_yaml or "", "config")
    except ConfigError as err:
        return cannot_start(err.problems)
    return start_training(cfg)


def ran_out_of_memory(job) -> bool:
    """Whether ``job`` has ended failed with out-of-memory (the core wraps it as OutOfMemory)."""
    return (job is not None and not job.running
            and isinstance(getattr(job, "error", None), training.OutOfMemory))


def retry_training() -> str:
    """Run the job that ran out of memory again with half the micro-batch and twice the accumulation."""
    job = current()
    if not ran_out_of_memory(job):
        return "Nothing to retry: the last run did not run out of memory."
    try:
        retry = job.retry_smaller()
    except ConfigError as err:
        return "**Cannot retry:** " + "; ".join(err.problems)
    state.get().job = retry
    t = retry.cfg.train
    return (f"Retrying as **{retry.name}** with micro-batch {t.micro_batch_size} × accumulation {t.grad_accum} "
            "(the same tokens per step).")


def stop_training() -> str:
    """Ask the current job to stop after its step (what was trained so far is saved)."""
    job = current()
    if job is None or not job.running:
        return "No run is going."
    job.stop()
    return f"Stopping **{job.name}** after the current step; what was trained so far is saved."


def resumable_runs(root: str | None = None) -> list[str]:
    """Run folders that ended early (stopped, interrupted, failed) and have a checkpoint."""
    root = root or str(state.get().runs_root)
    return [str(r.path) for r in runs.list_runs(root)
            if r.status.resumable and runs.last_checkpoint(r.path) is not None]


def resume_training(run_dir: str | None) -> str:
    """Continue ``run_dir`` from its last checkpoint."""
    if not run_dir:
        return "Pick a run to resume."
    try:
        job = training.TrainingJob.resume(paths.check_run_dir(run_dir))
    except ConfigError as err:
        return "**Cannot resume:** " + "; ".join(err.problems)
    state.get().job = job
    return f"Resuming **{job.name}**."


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def _progress_html(snap: dict) -> str:
    step, total = snap.get("step") or 0, snap.get("total") or 0
    pct = 100 * step / total if total else 0
    label = (f"{snap.get('state', '?')} · step {step}/{total or '?'} · {pct:.0f}% · "
             f"ETA {_duration(snap.get('eta_seconds'))}")
    return (f"<div class='track'><div class='bar' style='width:{pct:.1f}%'></div></div>"
            f"<div id='train-progress-label'>{label}</div>")


def _num(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "–"


def _stats_md(snap: dict) -> str:
    mem, peak = snap.get("memory_bytes"), snap.get("peak_memory_bytes")
    memory = f"{mem / 1e9:.2f} GB" if mem else "–"
    if peak:
        memory += f" (peak {peak / 1e9:.2f} GB)"
    return (f"**loss** {_num(snap.get('loss'), '.4f')} · **eval loss** {_num(snap.get('eval_loss'), '.4f')} · "
            f"**lr** {_num(snap.get('learning_rate'), '.2e')} · "
            f"**tokens/s** {_num(snap.get('tokens_per_second'), ',.0f')} · **memory** {memory}")


def _log_line(event: dict) -> str | None:
    when = time.strftime("%H:%M:%S", time.localtime(event.get("time", 0)))
    kind = event.get("type")
    if kind == "log":
        return (f"{when} step {event.get('step')}/{event.get('total')} loss {event.get('loss', 0):.4f} "
                f"lr {event.get('learning_rate') or 0:.2e} {event.get('tokens_per_second') or 0:,.0f} tok/s")
    if kind == "eval":
        return f"{when} step {event.get('step')} eval loss {event.get('eval_loss', 0):.4f}"
    if kind == "state":
        return f"{when} {event.get('state')}" + (f": {event['message']}" if event.get("message") else "")
    if kind == "setup":
        return (f"{when} {event.get('rows')} training rows, {event.get('eval_rows')} eval rows, "
                f"{event.get('total_steps')} steps, learning rate {event.get('learning_rate')}")
    if kind == "message":
        return f"{when} {event.get('text')}"
    return None


def _result_md(job, snap: dict) -> str:
    status = RunStatus(snap.get("state"))
    if status is RunStatus.FAILED:
        return f"**The run failed:** {snap.get('message') or getattr(job, 'error', '')}"
    if not status.has_result:
        return ""
    result = getattr(job, "result", {}) or {}
    parts = [f"**{'Finished' if status is RunStatus.DONE else 'Stopped'}.** Run folder `{job.run_dir}`",
             f"final loss {_num(result.get('final_loss'), '.4f')}"]
    if isinstance(result.get("final_eval_loss"), (int, float)):
        parts.append(f"eval loss {result['final_eval_loss']:.4f}")
    size = _adapter_bytes(job)
    if size:
        parts.append(f"adapter {size / 2**20:.1f} MB")
    parts.append(f"{_duration(result.get('train_seconds'))} of training")
    return " · ".join(parts)


def _adapter_bytes(job) -> int:
    if job.run_dir is None:
        return 0
    return int(runs.read_state(job.run_dir).get("adapter_bytes") or 0)


class _Feed:
    """One job's events as the view has read them so far.

    Every open page polls about once a step, so a tick reads only the events that are new since the last
    one, and the chart is rebuilt only when a row was added: ten pages watching cost about what one does,
    however long the run has been going. The job's own lock is held only while the new events are copied.
    """

    def __init__(self, job):
        self.job, self.seen = job, 0
        self.rows: list[dict] = []
        self.hardware: list[dict] = []
        self.lines: deque[str] = deque(maxlen=_LOG_LINES)
        self.figure: go.Figure | None = None
        self.lock = threading.Lock()

    def read(self) -> tuple[go.Figure, str]:
        """The chart and the log tail as of now."""
        with self.lock:
            new = self.job.events(self.seen)
            if new:
                self.seen = new[-1]["index"] + 1
                rows = [e for e in new if e.get("type") in ("log", "eval")]
                hardware = [e for e in new if e.get("type") == "hardware"]
                self.lines.extend(line for line in map(_log_line, new) if line)
                if rows or hardware:
                    self.rows += rows
                    self.hardware += hardware
                    self.figure = None
            if self.figure is None:
                self.figure = plots.train_dashboard(_thin(self.rows), _thin(self.hardware),
                                                    title=f"Loss · {self.job.name}")
            return self.figure, "\n".join(self.lines)


_feeds: "weakref.WeakKeyDictionary[Any, _Feed]" = weakref.WeakKeyDictionary()
_feeds_lock = threading.Lock()


def _feed(job) -> _Feed:
    with _feeds_lock:
        feed = _feeds.get(job)
        if feed is None:
            feed = _feeds[job] = _Feed(job)
        return feed


@lru_cache(maxsize=1)
def _empty_chart() -> go.Figure:
    return plots.train_dashboard([])


def _thin(rows: list[dict]) -> list[dict]:
    """At most about _CHART_POINTS training rows (evenly spaced, the last kept) and every eval row."""
    stride = -(-len(rows) // _CHART_POINTS)
    if stride <= 1:
        return rows
    last = len(rows) - 1
    return [r for i, r in enumerate(rows) if i % stride == 0 or i == last or "eval_loss" in r]


def training_view(job=None) -> TrainView:
    """The Train tab's view of ``job`` (default: the current one); ``active`` is False once it has ended."""
    job = job if job is not None else current()
    if job is None:
        return TrainView("<div id='train-progress-label'>No run yet.</div>", "", _empty_chart(), "", "", False)
    snap = job.snapshot()
    figure, log = _feed(job).read()
    ended = RunStatus(snap.get("state")).ended and not job.running
    return TrainView(_progress_html(snap), _stats_md(snap), figure, log, _result_md(job, snap), not ended,
                     ended and ran_out_of_memory(job), tick_seconds(snap))


def status() -> dict:
    """The current job's snapshot (the API's status endpoint); {'state': 'idle'} when there is none."""
    job = current()
    return job.snapshot() if job is not None else {"state": "idle"}


_serialised: list = [None, None]  # [figure, its PlotData]: one chart serialised once for every page polling
_serialised_lock = threading.Lock()


def _plot_data(figure: go.Figure) -> PlotData:
    """What gr.Plot sends for ``figure``, made once per chart rather than once per page and tick."""
    with _serialised_lock:
        if _serialised[0] is not figure:
            _serialised[:] = [figure, PlotData(type="plotly", plot=figure.to_json())]
        return _serialised[1]


def _view_outputs(view: TrainView) -> tuple:
    return (view.progress, view.stats, _plot_data(view.figure), view.log, view.result, gr.Timer(active=view.active),
            gr.Button(visible=view.retry))


def tick(shown: bool | None = None) -> tuple:
    """The timer's event for one page: its flag that it is set up (a gr.State), then the view's parts.

    Every open page ticks about once a step (see tick_seconds). Gradio rebuilds a component for every update
    it is sent (a gr.Timer(...), a gr.Button(...), even gr.skip()), which costs far more than the values
    themselves, so a page that already follows a running job (``shown`` is set) gets plain values only: the
    texts, the chart serialised once for every page, the timer's next interval and the button's label. The
    updates that switch the timer off and show Retry go out once, when the job has ended.
    """
    view = training_view()
    if shown is not None and view.active:
        return (True, view.progress, view.stats, _plot_data(view.figure), view.log, view.result, view.next_tick,
                RETRY_LABEL)
    return (True, *_view_outputs(view))


def tick_seconds(snap: dict, now: float | None = None) -> float:
    """When a page polls next, in seconds: every second, or just after the run's next step should end.

    A page cannot show more than one new step per step, and each tick costs the server a few milliseconds
    of the CPU the training also needs. Where steps take longer than two seconds the tick sets the page's
    timer to the moment the next step is due (the mean step so far, and a tenth more): one tick per step,
    which sees the step soon after it ends. A step running late (an evaluation, a checkpoint being written)
    is looked at again every half step; the page never waits more than 5 s.
    """
    per_step, at = snap.get("step_seconds"), snap.get("step_at")
    if not per_step or not at or per_step < 2 * TICK_SECONDS:
        return TICK_SECONDS
    wait = at + 1.1 * per_step - (time.time() if now is None else now)
    if wait < TICK_SECONDS:
        wait = per_step / 2
    return round(min(max(wait, TICK_SECONDS), _SLOWEST_TICK), 1)


def build_train_tab(form: Form, runs_root: str) -> TrainTab:
    """Schedule settings (in ``form``), the controls and the live view."""
    with gr.Row():
        with gr.Column(scale=2):
            form.add("train.run_name", field_widget(TrainSpec, "run_name", elem_id="run-name"))
            build_objective_panel(form)
            form.add("train.output_dir", gr.Textbox(runs_root, label="runs folder", interactive=False,
                                                    info="where run folders are written (set when the studio starts)"))
            for i in range(0, len(SCHEDULE_FIELDS), 2):
                with gr.Row():
                    for name in SCHEDULE_FIELDS[i:i + 2]:
                        form.add(f"train.{name}", field_widget(TrainSpec, name, elem_id=f"train-{name}"))
        with gr.Column(scale=3):
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="start-btn")
                stop = gr.Button("Stop", variant="stop", elem_id="stop-btn")
            with gr.Row():
                resume_run = gr.Dropdown(resumable_runs(runs_root), label="resume a run", scale=3,
                                         info="runs that ended early and have a checkpoint", elem_id="resume-run")
                resume = gr.Button("Resume", scale=1, elem_id="resume-btn")
            message = gr.Markdown(elem_id="train-message")
            progress = gr.HTML(training_view().progress, elem_id="train-progress")
            stats = gr.Markdown(elem_id="train-stats")
            plot = gr.Plot(plots.train_dashboard([]), show_label=False, elem_id="loss-plot")
            result = gr.Markdown(elem_id="train-result")
            retry = gr.Button(RETRY_LABEL, visible=False,
                              variant="primary", elem_id="retry-btn")
            log = gr.Textbox(label="log", lines=8, max_lines=8, interactive=False, elem_id="train-log",
                             elem_classes=["mono"])
    rewards = rewards_panel.build_rewards_panel(form)  # GRPO's reward list and its live curves and answers
    timer = gr.Timer(TICK_SECONDS, active=False)
    return TrainTab(start, stop, resume_run, resume, message, progress, stats, plot, log, result, timer, retry,
                    gr.State(None), rewards)


def wire_train_tab(tab: TrainTab, form: Form, demo: gr.Blocks) -> None:
    """Start / Stop / Resume, the polling timer, and picking a running job back up on page load."""
    view = [tab.shown, tab.progress, tab.stats, tab.plot, tab.log, tab.result, tab.timer, tab.retry]

    def _start(*values):
        try:
            cfg = form.to_config(*values)
        except ConfigError as err:
            return ("**Check the settings:**\n" + "\n".join(f"- {p}" for p in err.problems),
                    gr.Timer(active=False))
        text = start_training(cfg)
        return text, gr.Timer(active=current() is not None and current().running)

    def _resume(run_dir):
        text = resume_training(run_dir)
        return text, gr.Timer(active=current() is not None and current().running)

    tab.start.click(_start, form.components, [tab.message, tab.timer], concurrency_limit=None,
                    api_name="start_training")
    tab.stop.click(stop_training, None, tab.message, concurrency_limit=None, api_name="stop_training")
    tab.resume.click(_resume, tab.resume_run, [tab.message, tab.timer], concurrency_limit=None,
                     api_name="resume_training")
    def _retry():
        text = retry_training()
        running = current() is not None and current().running
        return text, gr.Timer(active=running), gr.Button(visible=not running and ran_out_of_memory(current()))

    tab.retry.click(_retry, None, [tab.message, tab.timer, tab.retry], concurrency_limit=None,
                    api_name="retry_smaller")
    tab.resume_run.focus(lambda: gr.update(choices=resumable_runs()), None, tab.resume_run,
                         api_visibility="private", concurrency_limit=None)
    tab.timer.tick(tick, tab.shown, view, concurrency_limit=None, show_progress="hidden", api_visibility="private")
    demo.load(tick, None, view, concurrency_limit=None, show_progress="hidden", api_visibility="private")
    if tab.rewards is not None:
        rewards_panel.wire_rewards_panel(tab.rewards, tab.timer, demo, current)
    gr.api(status, api_name="status", concurrency_limit=None)
    gr.api(start_from_yaml, api_name="start_yaml", concurrency_limit=None)
