"""The Train tab's objective: a dropdown over the objective registry and the chosen objective's knobs, and
the finished run a new run starts from (``model.adapter_from``: DPO on top of an SFT run).

Widgets only: every knob widget comes from ``form.setting_widget`` over the objective's own Settings, and
``Form.to_config`` keeps the knobs of the chosen objective only (keys ``objknob:OBJECTIVE:NAME``).
"""

from __future__ import annotations

import gradio as gr

from studio import objectives, start_from
from studio.config import ModelSpec, setting
from studio.ui import state
from studio.ui.form import OBJECTIVE_KNOB, Form, setting_widget

__all__ = ["build_objective_panel", "knob_visibility", "start_choices"]


def knob_visibility(name: str) -> list[dict]:
    """One ``gr.update(visible=...)`` per objective group, showing only ``name``'s knobs."""
    return [gr.update(visible=o.name == name) for o in objectives.all_objectives() if o.knobs]


def build_objective_panel(form: Form) -> gr.Dropdown:
    """The objective dropdown and one group of knob widgets per objective (hidden unless chosen)."""
    choices = [(f"{o.title}: {o.summary}", o.name) for o in objectives.all_objectives()]
    dropdown = form.add("train.objective.name", gr.Dropdown(
        choices, value="sft", label="objective", elem_id="train-objective",
        info="what the run learns; preference objectives need prompt / chosen / rejected rows (KTO: labelled rows)"))
    groups = []
    for obj in objectives.all_objectives():
        if not obj.knobs:
            continue
        with gr.Group(visible=obj.name == "sft") as group:
            for knob in obj.knobs:
                form.add(f"{OBJECTIVE_KNOB}:{obj.name}:{knob.name}",
                         setting_widget(knob, elem_id=f"objective-{obj.name}-{knob.name}"))
        groups.append(group)
    dropdown.change(knob_visibility, dropdown, groups)
    start = form.add("model.adapter_from", gr.Dropdown(
        start_choices(), value="", allow_custom_value=True, label="start from", elem_id="train-adapter-from",
        info=setting(ModelSpec, "adapter_from").help + " (or a fresh adapter)"))
    start.focus(lambda: gr.update(choices=start_choices()), None, start, api_visibility="private",
                show_progress="hidden")
    return dropdown


def start_choices() -> list[tuple[str, str]]:
    """A fresh adapter ("") and the finished runs in the runs folder a new run can start from."""
    return [("(a fresh adapter)", "")] + start_from.finished_runs(state.get().runs_root)
