"""Plotly figures for the studio: the memory breakdown, the live loss chart, run overlays, token lengths.

Each figure keeps a constant ``layout.uirevision`` so a zoom or a hidden trace survives the redraws
that the timer and the sliders cause.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["memory_bar", "loss_chart", "lr_finder_chart", "train_dashboard", "hardware_series", "overlay_chart",
           "series_overlay", "OVERLAY_SERIES", "length_histogram", "GUARD_SERIES", "strictness_chart",
           "empty", "SERIES"]

_GB = 1000**3  # decimal GB, as the fit verdict speaks
_FONT = dict(size=12)
_MARGIN = dict(l=50, r=50, t=40, b=40)


def empty(title: str = "", height: int = 300) -> go.Figure:
    """A blank figure with a title (shown before there is anything to plot)."""
    fig = go.Figure()
    fig.update_layout(title=title, height=height, margin=_MARGIN, font=_FONT, uirevision=title or "empty",
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def memory_bar(parts: dict[str, float], capacity_bytes: float | None = None, title: str = "VRAM estimate") -> go.Figure:
    """One horizontal stacked bar of the estimate's parts (bytes), with the GPU's capacity as a line."""
    fig = go.Figure()
    for name, value in parts.items():
        if value <= 0:
            continue
        gb = value / _GB
        fig.add_trace(go.Bar(x=[gb], y=["peak"], name=name.replace("_", " "), orientation="h",
                             hovertemplate=f"{name.replace('_', ' ')}: %{{x:.3f}} GB<extra></extra>"))
    total = sum(v for v in parts.values() if v > 0)
    # a capacity far beyond the peak would squash the bar to nothing: then it is only named in the title
    if capacity_bytes and capacity_bytes <= 4 * total:
        fig.add_vline(x=capacity_bytes / _GB, line_dash="dash", line_color="crimson",
                      annotation_text=f"{capacity_bytes / _GB:.0f} GB", annotation_position="top")
    if capacity_bytes and capacity_bytes > 4 * total:
        title += f" of {capacity_bytes / 1e9:.1f} GB"
    fig.update_layout(barmode="stack", title=title, height=260, margin=_MARGIN, font=_FONT, uirevision="memory",
                      xaxis_title="GB", legend=dict(orientation="h", y=-0.35), yaxis=dict(showticklabels=False))
    return fig


def _reward_traces(rows: list[dict]) -> list[go.Scatter]:
    """Preference objectives: chosen-minus-rejected reward and the share of pairs ranked right (none for SFT),
    drawn on the loss axis."""
    traces = []
    for key, name in (("reward_margin", "reward margin"), ("reward_accuracy", "reward accuracy")):
        points = [r for r in rows if r.get(key) is not None]
        if points:
            traces.append(go.Scatter(x=[r["step"] for r in points], y=[r[key] for r in points], name=name,
                                     mode="lines+markers", marker=dict(size=4),
                                     line=dict(width=2, dash="dash" if "accuracy" in key else None)))
    return traces


def loss_chart(rows: list[dict], title: str = "Loss") -> go.Figure:
    """Training loss and eval loss against step (plus reward margin and accuracy for preference objectives),
    learning rate on a second y axis."""
    train = [r for r in rows if r.get("loss") is not None]
    evals = [r for r in rows if r.get("eval_loss") is not None]
    lr = [r for r in rows if r.get("learning_rate") is not None]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[r["step"] for r in train], y=[r["loss"] for r in train], name="train loss",
                             mode="lines+markers", marker=dict(size=4)))
    if evals:
        fig.add_trace(go.Scatter(x=[r["step"] for r in evals], y=[r["eval_loss"] for r in evals], name="eval loss",
                                 mode="lines+markers", marker=dict(size=7, symbol="diamond")))
    for trace in _reward_traces(rows):
        fig.add_trace(trace)
    if lr:
        fig.add_trace(go.Scatter(x=[r["step"] for r in lr], y=[r["learning_rate"] for r in lr], name="learning rate",
                                 yaxis="y2", mode="lines", line=dict(dash="dot", width=1)))
    fig.update_layout(title=title, height=340, margin=_MARGIN, font=_FONT, uirevision="loss",
                      xaxis=dict(title="step"), yaxis=dict(title="loss"),
                      yaxis2=dict(title="learning rate", overlaying="y", side="right", showgrid=False,
                                  exponentformat="e"),
                      legend=dict(orientation="h", y=-0.25))
    return fig


SERIES = {"loss": "train loss", "eval_loss": "eval loss", "grad_norm": "grad norm",
          "tokens_per_second": "tokens/s", "learning_rate": "learning rate"}
"""metrics.jsonl columns a chart can show, with their labels"""


def hardware_series(samples: list[dict]) -> dict[str, tuple[list, list]]:
    """Per-sample hardware lines, x in seconds since the run began: ``{"GPU 0 util %": (x, y), ...}``.

    With GPUs: utilisation, memory (GB), temperature and power per GPU. Without: the process's CPU % and RAM.
    """
    out: dict[str, tuple[list, list]] = {}

    def add(name, x, y):
        if y is not None:
            xs, ys = out.setdefault(name, ([], []))
            xs.append(x)
            ys.append(y)

    for s in samples:
        x = s.get("elapsed", 0)
        gpus = s.get("gpus")
        for g in gpus or ():
            i = g.get("index", 0)
            add(f"GPU {i} util %", x, g.get("utilization"))
            mem = g.get("memory_used_bytes")
            add(f"GPU {i} memory GB", x, mem / _GB if mem is not None else None)
            add(f"GPU {i} temperature °C", x, g.get("temperature_c"))
            add(f"GPU {i} power W", x, g.get("power_w"))
        if not gpus:
            add("CPU %", x, s.get("cpu_percent"))
            rss = s.get("rss_bytes")
            add("RAM GB", x, rss / _GB if rss is not None else None)
    return out


_HW_PANEL = {"util %": 5, "CPU %": 5, "memory GB": 6, "RAM GB": 6, "temperature °C": 7, "power W": 8}
"""a hardware line's suffix -> its panel in the dashboard (1-based, row-major over 4 x 2)"""


GUARD_SERIES = {"kl_to_base": "KL to base", "ewc": "EWC penalty"}
"""the guards' logged terms (studio.base_guard) and their names on the Train tab's loss panel"""


def train_dashboard(rows: list[dict], hardware: list[dict] | None = None, title: str = "Loss") -> go.Figure:
    """The Train tab's live charts: loss (train and eval), grad norm, tokens/s, learning rate, hardware.

    The first trace is the train loss, so a reader of ``figure.data[0]`` sees what ``loss_chart`` shows.
    """
    names = ("loss", "grad norm", "tokens/s", "learning rate", "utilisation %", "memory GB",
             "temperature °C", "power W")
    fig = make_subplots(rows=4, cols=2, subplot_titles=names, vertical_spacing=0.09, horizontal_spacing=0.12)
    train = [r for r in rows if r.get("loss") is not None]
    evals = [r for r in rows if r.get("eval_loss") is not None]
    fig.add_trace(go.Scatter(x=[r["step"] for r in train], y=[r["loss"] for r in train], name="train loss",
                             mode="lines+markers", marker=dict(size=4)), row=1, col=1)
    fig.add_trace(go.Scatter(x=[r["step"] for r in evals], y=[r["eval_loss"] for r in evals], name="eval loss",
                             mode="lines+markers", marker=dict(size=7, symbol="diamond")), row=1, col=1)
    for key, name in GUARD_SERIES.items():  # the stay-close-to-base terms, on the loss panel when logged
        have = [r for r in train if r.get(key) is not None]
        if have:
            fig.add_trace(go.Scatter(x=[r["step"] for r in have], y=[r[key] for r in have], name=name,
                                     mode="lines+markers", marker=dict(size=4), line=dict(dash="dot")), row=1, col=1)
    for trace in _reward_traces(rows):  # preference objectives: beside the loss, as they stream
        fig.add_trace(trace, row=1, col=1)
    for panel, key in ((2, "grad_norm"), (3, "tokens_per_second"), (4, "learning_rate")):
        have = [r for r in train if r.get(key) is not None]
        fig.add_trace(go.Scatter(x=[r["step"] for r in have], y=[r[key] for r in have], name=SERIES[key],
                                 mode="lines+markers", marker=dict(size=4)), row=(panel - 1) // 2 + 1,
                      col=(panel - 1) % 2 + 1)
    for name, (x, y) in hardware_series(hardware or []).items():
        panel = next(p for suffix, p in _HW_PANEL.items() if name.endswith(suffix))
        fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines"), row=(panel - 1) // 2 + 1,
                      col=(panel - 1) % 2 + 1)
    for col in (1, 2):
        for row in (1, 2):
            fig.update_xaxes(title_text="step", row=row, col=col, title_standoff=2)
        for row in (3, 4):
            fig.update_xaxes(title_text="seconds", row=row, col=col, title_standoff=2)
    fig.update_yaxes(exponentformat="e", row=2, col=2)
    fig.update_layout(title=title, height=900, margin=_MARGIN, font=_FONT, uirevision="loss",
                      legend=dict(orientation="h", y=-0.06))
    return fig


def lr_finder_chart(lrs: list[float], losses: list[float], smoothed: list[float], suggestion: float | None,
                    min_loss_lr: float | None = None) -> go.Figure:
    """The range test: loss against learning rate (log axis), the suggestion as a line."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=lrs, y=losses, name="loss", mode="markers", marker=dict(size=5, opacity=0.5)))
    fig.add_trace(go.Scatter(x=lrs, y=smoothed, name="smoothed", mode="lines"))
    if suggestion:
        fig.add_vline(x=suggestion, line_dash="dash", line_color="seagreen",
                      annotation_text=f"suggested {suggestion:.1e}", annotation_position="top left")
    if min_loss_lr:
        fig.add_vline(x=min_loss_lr, line_dash="dot", line_color="gray",
                      annotation_text="lowest loss", annotation_position="bottom right")
    fig.update_layout(title="Learning-rate range test", height=320, margin=_MARGIN, font=_FONT, uirevision="lrfind",
                      xaxis=dict(title="learning rate", type="log", exponentformat="e"), yaxis_title="loss",
                      legend=dict(orientation="h", y=-0.3))
    # a diverging tail would squash the part that matters: show up to twice the first smoothed loss
    if smoothed:
        fig.update_yaxes(range=[min(smoothed) * 0.9, max(min(max(losses), 2 * smoothed[0]), min(smoothed) * 1.1)])
    return fig


OVERLAY_SERIES = ("loss", "grad norm", "tokens/s", "learning rate", "CPU %", "RAM GB", "util %", "memory GB",
                  "temperature °C", "power W")
"""what the Runs tab can overlay across runs: metrics.jsonl series by step, hardware.jsonl series by second"""


def series_overlay(lines: dict[str, tuple[list, list]], label: str, x_title: str) -> go.Figure:
    """One named series of several runs in one chart: ``{trace name: (x, y)}``."""
    fig = go.Figure()
    for name, (x, y) in lines.items():
        fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines"))
    fig.update_layout(title=f"{label} by run", height=360, margin=_MARGIN, font=_FONT, uirevision="overlay",
                      xaxis_title=x_title, yaxis_title=label, legend=dict(orientation="h", y=-0.25))
    return fig


def overlay_chart(curves: dict[str, dict[str, list]]) -> go.Figure:
    """Loss curves of several runs in one chart: ``{run: {"step": [...], "loss": [...], "eval_step", "eval_loss"}}``."""
    fig = go.Figure()
    for name, c in curves.items():
        fig.add_trace(go.Scatter(x=c.get("step", []), y=c.get("loss", []), name=name, mode="lines"))
        if c.get("eval_loss"):
            fig.add_trace(go.Scatter(x=c.get("eval_step", []), y=c["eval_loss"], name=f"{name} (eval)",
                                     mode="markers", marker=dict(symbol="diamond", size=7)))
    fig.update_layout(title="Loss by run", height=360, margin=_MARGIN, font=_FONT, uirevision="overlay",
                      xaxis_title="step", yaxis_title="loss", legend=dict(orientation="h", y=-0.25))
    return fig


def length_histogram(lengths: list[int], max_seq_len: int) -> go.Figure:
    """Token lengths of the examples, with the max_seq_len cut as a line."""
    cut = sum(1 for n in lengths if n > max_seq_len)
    fig = go.Figure(go.Histogram(x=lengths, nbinsx=40, name="rows"))
    fig.add_vline(x=max_seq_len, line_dash="dash", line_color="crimson",
                  annotation_text=f"max_seq_len {max_seq_len}: {cut} row(s) cut", annotation_position="top right")
    fig.update_layout(title="Tokens per example", height=280, margin=_MARGIN, font=_FONT, uirevision="lengths",
                      xaxis_title="tokens", yaxis_title="rows", showlegend=False)
    return fig


def strictness_chart(points: list[dict]) -> go.Figure:
    """Rows kept (bars) and diversity (distinct 2-grams, line on its own axis) as the filters get stricter."""
    names = [p["filter"] for p in points]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=names, y=[p["rows"] for p in points], name="rows kept", opacity=0.6), secondary_y=False)
    fig.add_trace(go.Scatter(x=names, y=[p["distinct_2"] for p in points], name="distinct 2-grams",
                             mode="lines+markers"), secondary_y=True)
    fig.update_yaxes(title_text="rows kept", secondary_y=False)
    fig.update_yaxes(title_text="distinct 2-grams", range=[0, 1], secondary_y=True)
    fig.update_layout(title="Size against diversity as filtering gets stricter", height=300, margin=_MARGIN,
                      font=_FONT, legend=dict(orientation="h", y=-0.3), xaxis_title="filter")
    return fig
