"""'Find a learning rate' (Train tab): the range test on the form's settings, its plot, and a button that
puts the suggestion into the form. Nothing is saved as a run."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio import lr_finder, training
from studio import faults
from studio.config import ConfigError, RunConfig
from studio.ui import plots
from studio.ui.form import Form

__all__ = ["LrPanel", "build_lr_panel", "wire_lr_panel", "find_learning_rate"]


@dataclass
class LrPanel:
    steps: gr.Slider
    find: gr.Button
    plot: gr.Plot
    message: gr.Markdown
    use: gr.Button
    suggestion: gr.State


def find_learning_rate(cfg: RunConfig, steps: int = 40) -> tuple:
    """(figure, message, suggestion or None) for the range test on ``cfg``; refused while a run trains."""
    job = training.current_job()
    if job is not None and job.running:
        return plots.empty("Learning-rate range test"), f"**Wait:** {job.name} is training.", None
    try:
        found = lr_finder.find_lr(cfg, steps=int(steps))
    except ConfigError as err:
        return plots.empty("Learning-rate range test"), "**Cannot run:** " + "; ".join(err.problems), None
    except Exception as err:  # noqa: BLE001 - one line on the page, not a traceback
        return plots.empty("Learning-rate range test"), f"**The test failed:** {faults.one_line(err)}", None
    figure = plots.lr_finder_chart(found.lrs, found.losses, found.smoothed, found.suggestion, found.min_loss_lr)
    return figure, found.summary(), found.suggestion


def build_lr_panel() -> LrPanel:
    """The accordion under the Train tab's settings."""
    with gr.Accordion("Find a learning rate", open=False, elem_id="lr-finder"):
        gr.Markdown("A short range test: the learning rate rises over a few dozen steps on a copy of these "
                    "settings; the weights are put back and nothing is saved.")
        with gr.Row():
            steps = gr.Slider(10, 100, value=40, step=5, label="steps", elem_id="lr-steps")
            find = gr.Button("Find learning rate", elem_id="lr-find-btn")
        plot = gr.Plot(plots.empty("Learning-rate range test"), show_label=False, elem_id="lr-plot")
        message = gr.Markdown(elem_id="lr-message")
        use = gr.Button("Use the suggestion", visible=False, elem_id="lr-use-btn")
    return LrPanel(steps, find, plot, message, use, gr.State(None))


def wire_lr_panel(panel: LrPanel, form: Form) -> None:
    """Find runs the test on the form's settings; Use puts the suggestion into train.learning_rate."""

    def _find(steps, *values):
        try:
            cfg = form.to_config(*values)
        except ConfigError as err:
            return plots.empty("Learning-rate range test"), "**Check the settings:** " + "; ".join(err.problems), \
                None, gr.Button(visible=False)
        figure, text, suggestion = find_learning_rate(cfg, steps)
        return figure, text, suggestion, gr.Button(visible=suggestion is not None)

    panel.find.click(_find, [panel.steps, *form.components], [panel.plot, panel.message, panel.suggestion, panel.use],
                     api_name="find_learning_rate")
    lr_box = form.components[form.index("train.learning_rate")]
    panel.use.click(lambda s: float(f"{s:.2g}") if s else gr.skip(), panel.suggestion, lr_box,
                    api_visibility="private")
