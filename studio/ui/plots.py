"""Plotly figures for the studio: the memory breakdown, the live loss chart, run overlays, token lengths.

Each figure keeps a constant ``layout.uirevision`` so a zoom or a hidden trace survives the redraws
that the timer and the sliders cause.
"""

from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["memory_bar", "loss_chart", "overlay_chart", "length_histogram", "empty"]

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
    # preference objectives: chosen-minus-rejected reward and the share of pairs ranked right, on the loss axis
    for key, name in (("reward_margin", "reward margin"), ("reward_accuracy", "reward accuracy")):
        points = [r for r in rows if r.get(key) is not None]
        if points:
            fig.add_trace(go.Scatter(x=[r["step"] for r in points], y=[r[key] for r in points], name=name,
                                     mode="lines", line=dict(width=2, dash="dash" if "accuracy" in key else None)))
    if lr:
        fig.add_trace(go.Scatter(x=[r["step"] for r in lr], y=[r["learning_rate"] for r in lr], name="learning rate",
                                 yaxis="y2", mode="lines", line=dict(dash="dot", width=1)))
    fig.update_layout(title=title, height=340, margin=_MARGIN, font=_FONT, uirevision="loss",
                      xaxis=dict(title="step"), yaxis=dict(title="loss"),
                      yaxis2=dict(title="learning rate", overlaying="y", side="right", showgrid=False,
                                  exponentformat="e"),
                      legend=dict(orientation="h", y=-0.25))
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
