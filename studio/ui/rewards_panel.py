"""Rewards panel of the Train tab: build GRPO's reward list with widgets, and watch it work.

Left: pick a kind, set its settings and weight, Add; remove one by its number. The list itself is a form
field (``train.rewards``), so it goes into the RunConfig like every other setting and is checked by
``studio.validation`` (one line per problem). Right, while a GRPO run goes: each reward's mean, the total
and the KL as live curves, and the latest sampled answers with their scores. The kinds, their settings and
the checks are the core's (``studio.rewards``); the events are the run's ('log' rows, 'samples').
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
import plotly.graph_objects as go

from studio import rewards
from studio.ui.form import Form, setting_widget

__all__ = ["RewardsPanel", "build_rewards_panel", "wire_rewards_panel", "add_reward", "remove_reward",
           "kind_visibility", "reward_chart", "samples_table", "reward_view"]

_SETTINGS = {s.name: s for kind in rewards.KINDS.values() for s in kind.settings}  # one widget per setting name


@dataclass
class RewardsPanel:
    kind: gr.Dropdown
    settings: dict  # setting name -> widget
    add: gr.Button
    remove_index: gr.Number
    remove: gr.Button
    items: gr.JSON  # the list itself: the form's train.rewards
    message: gr.Markdown
    chart: gr.Plot
    table: gr.Dataframe


def _item(kind: str, values: dict) -> dict:
    """One reward mapping from the widget values: its kind's settings only, typed by each setting."""
    item: dict[str, Any] = {"kind": kind}
    for s in rewards.KINDS[kind].settings:
        value = values.get(s.name, s.default)
        if s.type is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        item[s.name] = s.coerce(value) if value is not None else s.default
    return item


def add_reward(items: list | None, kind: str, values: dict) -> tuple[list, str]:
    """``items`` with the reward the widgets describe added, or unchanged with its problems, one line each."""
    items = list(items or [])
    item = _item(kind, values)
    found = rewards.check(items + [item])
    own = [p for p in found if p.startswith(f"train.rewards[{len(items)}]")]
    if own:
        return items, "**Not added:**\n" + "\n".join(f"- {p}" for p in own)
    return items + [item], f"added reward {len(items) + 1}: {rewards.KINDS[kind].title}"


def remove_reward(items: list | None, number: float | None) -> tuple[list, str]:
    """``items`` without reward number ``number`` (1-based, as the list shows it)."""
    items = list(items or [])
    index = int(number or 0) - 1
    if not 0 <= index < len(items):
        return items, f"no reward number {int(number or 0)} (there are {len(items)})"
    removed = items.pop(index)
    return items, f"removed reward {index + 1} ({removed.get('kind')})"


def kind_visibility(kind: str) -> list[bool]:
    """Which setting widgets a kind shows, in ``_SETTINGS`` order."""
    own = {s.name for s in rewards.KINDS[kind].settings}
    return [name in own for name in _SETTINGS]


def reward_chart(rows: list[dict], title: str = "Rewards") -> go.Figure:
    """Each reward's mean and the weighted total against step; the KL on a second axis."""
    fig = go.Figure()
    keys = sorted({k for r in rows for k in r if k.startswith("reward_") and k not in
                   ("reward_margin", "reward_accuracy")})
    for key, width in [("reward", 3)] + [(k, 1.5) for k in keys]:
        points = [r for r in rows if r.get(key) is not None]
        if points:
            fig.add_trace(go.Scatter(x=[r["step"] for r in points], y=[r[key] for r in points], mode="lines+markers",
                                     name="total" if key == "reward" else key[len("reward_"):],
                                     line=dict(width=width), marker=dict(size=4)))
    kl = [r for r in rows if r.get("kl") is not None]
    if kl:
        fig.add_trace(go.Scatter(x=[r["step"] for r in kl], y=[r["kl"] for r in kl], name="KL", yaxis="y2",
                                 mode="lines", line=dict(dash="dot", width=1)))
    fig.update_layout(title=title, height=300, margin=dict(l=50, r=50, t=40, b=40), uirevision="rewards",
                      xaxis_title="step", yaxis_title="mean reward",
                      yaxis2=dict(overlaying="y", side="right", title="KL", showgrid=False),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def samples_table(rows: list[dict]) -> list[list]:
    """The latest answers as table rows: prompt, answer, total, then each reward's score."""
    if not rows:
        return []
    names = [k for k in rows[0] if k not in ("prompt", "answer", "total")]
    return [[r["prompt"], r["answer"], r["total"], *(r.get(n) for n in names)] for r in rows]


class _Feed:
    """One job's reward rows and latest samples, read incrementally from its events."""

    def __init__(self, job):
        self.job, self.seen, self.rows, self.samples = job, 0, [], []
        self.lock = threading.Lock()

    def read(self) -> tuple[list[dict], list[dict]]:
        with self.lock:
            new = self.job.events(self.seen)
            if new:
                self.seen = new[-1]["index"] + 1
                self.rows += [e for e in new if e.get("type") == "log" and e.get("reward") is not None]
                samples = [e for e in new if e.get("type") == "samples"]
                if samples:
                    self.samples = samples[-1]["rows"]
            return list(self.rows), list(self.samples)


_feeds: "weakref.WeakKeyDictionary[Any, _Feed]" = weakref.WeakKeyDictionary()
_feeds_lock = threading.Lock()


def reward_view(job) -> tuple[go.Figure, list[list], list[str]]:
    """(chart, table rows, table headers) for ``job``; empty before a GRPO run has logged."""
    if job is None:
        return reward_chart([]), [], ["prompt", "answer", "total"]
    with _feeds_lock:
        feed = _feeds.get(job) or _feeds.setdefault(job, _Feed(job))
    rows, samples = feed.read()
    headers = ["prompt", "answer", "total"] + [k for k in (samples[0] if samples else {})
                                               if k not in ("prompt", "answer", "total")]
    return reward_chart(rows, f"Rewards · {job.name}"), samples_table(samples), headers


def _widget(item, visible: bool):
    if item.type is list:  # words are typed, comma separated (the setting splits them)
        return gr.Textbox("", label=item.name, info=item.help, visible=visible, elem_id=f"reward-{item.name}")
    return setting_widget(item, visible=visible, elem_id=f"reward-{item.name}")


def build_rewards_panel(form: Form) -> RewardsPanel:
    """The reward-list builder (its list joins ``form`` as train.rewards) and the live reward view."""
    with gr.Accordion("Rewards (GRPO)", open=False, elem_id="rewards-panel"):
        with gr.Row():
            with gr.Column(scale=2):
                kind = gr.Dropdown([(k.title, k.name) for k in rewards.KINDS.values()], value="match",
                                   label="reward", info="what it scores", elem_id="reward-kind")
                shown = dict(zip(_SETTINGS, kind_visibility("match")))
                settings = {name: _widget(s, shown[name]) for name, s in _SETTINGS.items()}
                with gr.Row():
                    add = gr.Button("Add reward", elem_id="reward-add")
                    remove_index = gr.Number(1, precision=0, minimum=1, label="number", scale=1,
                                             elem_id="reward-remove-index")
                    remove = gr.Button("Remove", scale=1, elem_id="reward-remove")
                message = gr.Markdown(elem_id="reward-message")
                items = form.add("train.rewards", gr.JSON([], label="rewards (in order: number 1, 2, ...)",
                                                          elem_id="reward-list"))
            with gr.Column(scale=3):
                chart = gr.Plot(reward_chart([]), show_label=False, elem_id="reward-plot")
                table = gr.Dataframe(headers=["prompt", "answer", "total"], label="latest sampled answers",
                                     interactive=False, wrap=True, elem_id="reward-samples")
    return RewardsPanel(kind, settings, add, remove_index, remove, items, message, chart, table)


def wire_rewards_panel(panel: RewardsPanel, timer: gr.Timer, demo: gr.Blocks, current: Callable) -> None:
    """Add / Remove, the kind's widgets, and the live view refreshed with the Train tab's timer."""
    names = list(panel.settings)
    widgets = [panel.settings[n] for n in names]

    def _add(items, kind, *values):
        return add_reward(items, kind, dict(zip(names, values)))

    panel.kind.change(lambda k: [gr.update(visible=v) for v in kind_visibility(k)], panel.kind, widgets,
                      api_visibility="private")
    panel.add.click(_add, [panel.items, panel.kind, *widgets], [panel.items, panel.message],
                    api_visibility="private")
    panel.remove.click(remove_reward, [panel.items, panel.remove_index], [panel.items, panel.message],
                       api_visibility="private")

    def _refresh():
        figure, rows, headers = reward_view(current())
        return figure, gr.Dataframe(value=rows, headers=headers)

    timer.tick(_refresh, None, [panel.chart, panel.table], concurrency_limit=None, show_progress="hidden",
               api_visibility="private")
    demo.load(_refresh, None, [panel.chart, panel.table], concurrency_limit=None, show_progress="hidden",
              api_visibility="private")
