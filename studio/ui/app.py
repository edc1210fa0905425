"""build_app(): the studio's tabs, left to right as a run is made, wired to the core."""

from __future__ import annotations

import gradio as gr

from studio.ui import (chat_tab, combine_panel, data_tab, gpus_panel, lr_panel, method_tab, model_tab, queue_panel,
                       runs_tab, state, train_tab)
from studio.ui.form import Form

__all__ = ["build_app", "CSS"]

CSS = """
#estimate-text, #trainable {font-size: 0.95rem}
#train-progress .bar {height: 14px; background: var(--color-accent); border-radius: 4px; transition: width .5s}
#train-progress .track {background: var(--neutral-200); border-radius: 4px; width: 100%}
#train-progress-label {font-size: 0.9rem; margin-top: 4px}
.mono textarea {font-family: var(--font-mono); font-size: 12px}
#runs-table th, #runs-table th *, #runs-table td * {word-break: keep-all !important; overflow-wrap: normal !important}
#runs-table table {font-size: 12px}
"""

_INTRO = ("# PEFT Studio\nPick a model and a method, see whether it fits, train, then chat with the base and the "
          "tuned model side by side. Everything here is a RunConfig: the Runs tab shows it as YAML and as a command.")


def _tab(label: str, elem_id: str) -> gr.Tab:
    return gr.Tab(label, id=elem_id, elem_id=elem_id)


def build_app(default_model: str | None = None, runs_root: str | None = None) -> gr.Blocks:
    """The studio as a gr.Blocks. Every tab adds its settings to one Form that builds the RunConfig."""
    app_state = state.configure(default_model, runs_root)
    form = app_state.form = Form()
    with gr.Blocks(title="PEFT Studio") as demo:
        gr.Markdown(_INTRO)
        with gr.Tabs(elem_id="tabs"):
            with _tab("1 · Model", "tab-model"):
                model = model_tab.build_model_tab(form, app_state.default_model)
            with _tab("2 · Method", "tab-method"):
                method = method_tab.build_method_tab(form, app_state.default_model)
            with _tab("3 · Data", "tab-data"):
                data = data_tab.build_data_tab(form)
            with _tab("4 · Train", "tab-train"):
                train = train_tab.build_train_tab(form, str(app_state.runs_root))
                queue = queue_panel.build_queue_panel()
                lr = lr_panel.build_lr_panel()
                gpus = gpus_panel.build_gpus_panel(form)
            with _tab("5 · Chat", "tab-chat"):
                chat = chat_tab.build_chat_tab()
            with _tab("6 · Runs", "tab-runs") as runs_item:
                runs = runs_tab.build_runs_tab()
                combine = combine_panel.build_combine_panel(runs_tab.run_names())
        model_tab.wire_model_tab(model)
        method_tab.wire_method_tab(method, form, model.model_id, model.gpu, demo)
        data_tab.wire_data_tab(data, form, demo)
        train_tab.wire_train_tab(train, form, demo)
        queue_panel.wire_queue_panel(queue, form)
        lr_panel.wire_lr_panel(lr, form)
        gpus_panel.wire_gpus_panel(gpus, form, model.gpu)
        chat_tab.wire_chat_tab(chat, model.model_id)
        runs_tab.wire_runs_tab(runs, form, runs_item)
        combine_panel.wire_combine_panel(combine, [runs.refresh.click, runs_item.select], runs_tab.run_names)
    return demo
