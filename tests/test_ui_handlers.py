"""The studio's event functions, called directly (no browser)."""

from __future__ import annotations

import gradio as gr
import pytest

from studio.config import ConfigError, RunConfig
from studio.ui import method_tab, model_tab
from studio.ui.form import Form, field_widget, knob_widget


@pytest.fixture
def app_form(tiny_dirs, tmp_path):
    """The real app's Form, built against a tiny model."""
    from studio.ui import state
    from studio.ui.app import build_app

    build_app(default_model=str(tiny_dirs["llama"]), runs_root=str(tmp_path))
    return state.get().form


def _values(form: Form) -> list:
    return [c.value for c in form.components]


def test_form_defaults_make_a_valid_config(app_form, tiny_dirs):
    cfg = app_form.to_config(*_values(app_form))
    assert cfg.model.id == str(tiny_dirs["llama"])
    assert cfg.method.name == "lora" and cfg.method.knobs["r"] == 8
    assert cfg.train.max_steps is None  # 0 in the widget means "not set"


def test_form_round_trip(app_form, tiny_dirs):
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])},
                               "method": {"name": "lora", "r": 32, "targets": ["mlp"]},
                               "train": {"micro_batch_size": 2, "gradient_checkpointing": True}})
    values = app_form.from_config(cfg)
    back = app_form.to_config(*values)
    assert back.method.knobs["r"] == 32 and back.method.knobs["targets"] == ["mlp"]
    assert back.train.micro_batch_size == 2 and back.train.gradient_checkpointing


def test_form_reports_every_problem(app_form):
    values = _values(app_form)
    values[app_form.index("knob:lora:r")] = 0
    values[app_form.index("train.micro_batch_size")] = 0
    with pytest.raises(ConfigError) as err:
        app_form.to_config(*values)
    assert len(err.value.problems) == 2


def test_widgets_follow_metadata():
    from studio import methods
    from studio.config import TrainSpec

    with gr.Blocks():
        rank = knob_widget(methods.get("lora").knob("r"))
        alpha = knob_widget(methods.get("lora").knob("alpha"))
        targets = knob_widget(methods.get("lora").knob("targets"), ["attention", "mlp", "q_proj"])
        warmup = field_widget(TrainSpec, "warmup_ratio")
        steps = field_widget(TrainSpec, "max_steps")
    assert isinstance(rank, gr.Slider) and rank.minimum == 1 and rank.step == 1
    assert isinstance(alpha, gr.Number)  # 0..4096 is too wide for a slider
    assert isinstance(targets, gr.CheckboxGroup)
    assert isinstance(warmup, gr.Slider) and warmup.maximum == 0.5
    assert isinstance(steps, gr.Number) and steps.value == 0


def test_arch_card_reads_config(tiny_dirs):
    card = model_tab.arch_card(str(tiny_dirs["llama"]))
    assert "llama" in card and "| layers | 2 |" in card
    assert "Cannot read" in model_tab.arch_card("/no/such/folder")


def test_method_groups_show_one():
    updates = method_tab.method_groups("full")
    assert sum(u["visible"] for u in updates) == 1


def test_target_choices_from_model(tiny_dirs):
    gpt2 = method_tab.target_choices(str(tiny_dirs["gpt2"]))
    assert "c_attn" in gpt2 and "all-linear" in gpt2


def test_estimate_changes_with_rank(tiny_dirs):
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4}})
    small = method_tab.estimate_view(cfg)
    cfg.method.knobs["r"] = 64
    big = method_tab.estimate_view(cfg)
    assert small[0] != big[0] and "trainable" in small[0]
