"""Runs tab: combine finished LoRA runs into a new run (studio.combine does the work)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio import combine
from studio.config import ConfigError
from studio.ui import state

__all__ = ["CombinePanel", "build_combine_panel", "wire_combine_panel", "combine_runs"]

_METHODS = ("ties", "linear", "cat", "svd", "dare_linear", "dare_ties", "magnitude_prune")


@dataclass
class CombinePanel:
    runs: gr.Dropdown
    method: gr.Dropdown
    weights: gr.Textbox
    density: gr.Slider
    name: gr.Textbox
    button: gr.Button
    message: gr.Markdown


def combine_runs(names: list[str] | None, method: str, weights: str, density: float, name: str,
                 root: str | None = None) -> str:
    """Combine the named runs under the runs folder; a Markdown line saying what came out, or why not."""
    root = Path(root or state.get().runs_root)
    try:
        folder = combine.combine_runs([root / Path(n).name for n in names or []], weights or "", method,
                                      name or "", root, density)
    except ConfigError as err:
        return "**Cannot combine:** " + "; ".join(err.problems)
    return f"Combined {len(names)} runs with **{method}** into **{folder.name}**; it is listed above after ↻ Refresh."


def build_combine_panel(run_names: list[str]) -> CombinePanel:
    with gr.Accordion("Combine finished LoRA runs into a new run", open=False, elem_id="combine-panel"):
        runs = gr.Dropdown(run_names, multiselect=True, label="runs (same base, same method)", elem_id="combine-runs")
        with gr.Row():
            method = gr.Dropdown(list(_METHODS), value="ties", label="method", elem_id="combine-method")
            weights = gr.Textbox(label="weights, one per run (empty: equal)", placeholder="0.6, 0.4",
                                 elem_id="combine-weights")
            density = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="density (ties, dare, magnitude_prune)")
            name = gr.Textbox(label="new run name", elem_id="combine-name")
        button = gr.Button("Combine", elem_id="combine-go")
        message = gr.Markdown(elem_id="combine-message")
    return CombinePanel(runs, method, weights, density, name, button, message)


def wire_combine_panel(panel: CombinePanel, refreshers: list, run_names) -> None:
    """Combine on click; ``refreshers`` (the Runs tab's refresh events) also renew the list of runs."""
    kw = dict(api_visibility="private", concurrency_limit=None)
    panel.button.click(combine_runs, [panel.runs, panel.method, panel.weights, panel.density, panel.name],
                       panel.message, api_visibility="private")
    for trigger in refreshers:
        trigger(lambda: gr.update(choices=run_names()), None, panel.runs, **kw)
