"""build_app(): the studio's tabs, left to right as a run is made, wired to the core."""

from __future__ import annotations

import gradio as gr

from studio.ui import state
from studio.ui.form import Form

__all__ = ["build_app", "CSS"]

CSS = """
#estimate-text, #trainable {font-size: 0.95rem}
#train-progress .bar {height: 14px; background: var(--color-accent); border-radius: 4px}
#train-progress .track {background: var(--neutral-200); border-radius: 4px; width: 100%}
.mono textarea {font-family: var(--font-mono); font-size: 12px}
"""


def _tab(label: str, elem_id: str):
    return gr.Tab(label, id=elem_id, elem_id=elem_id)


def build_app(default_model: str | None = None, runs_root: str | None = None) -> gr.Blocks:
    """The studio as a gr.Blocks. Every tab adds its settings to one Form that builds the RunConfig."""
    from studio.ui import method_tab, model_tab

    app_state = state.configure(default_model, runs_root)
    form = app_state.form = Form()
    with gr.Blocks(title="PEFT Studio") as demo:
        gr.Markdown("# PEFT Studio\nPick a model and a method, see whether it fits, train, then chat with "
                    "the base and the tuned model side by side.")
        with gr.Tabs(elem_id="tabs"):
            with _tab("1 · Model", "tab-model"):
                mt = model_tab.build_model_tab(form, app_state.default_model)
            with _tab("2 · Method", "tab-method"):
                met = method_tab.build_method_tab(form, app_state.default_model)
            for label, elem_id in (("3 · Data", "tab-data"), ("4 · Train", "tab-train"), ("5 · Chat", "tab-chat"),
                                   ("6 · Runs", "tab-runs")):
                with _tab(label, elem_id):
                    gr.Markdown(state.missing(label.split(" · ")[1] + " tab"))
        model_tab.wire_model_tab(mt)
        method_tab.wire_method_tab(met, form, mt.model_id, mt.gpu, demo)
    return demo
