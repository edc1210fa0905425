"""The studio's event functions, called directly (no browser)."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
import torch
from transformers import TrainerCallback

from studio.config import ConfigError, RunConfig
from studio.ui import method_tab, model_tab
from studio.ui.form import Form, field_widget, setting_widget


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
        rank = setting_widget(methods.get("lora").knob("r"))
        alpha = setting_widget(methods.get("lora").knob("alpha"))
        targets = setting_widget(methods.get("lora").knob("targets"), names=["attention", "mlp", "q_proj"])
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


def test_method_dropdown_and_knobs_come_from_the_registry(app_form):
    from studio import methods

    dropdown = app_form.components[app_form.index("method.name")]
    assert [value for _, value in dropdown.choices] == methods.names()
    for m in methods.all_methods():
        for knob in m.knobs:
            assert f"knob:{m.name}:{knob.name}" in app_form.keys, (m.name, knob.name)
    # no per-method branch in the UI: no method's name is compared with a method or a name in studio/ui
    # ("prompt" as a table column is not the prompt method)
    names, found = set(methods.names()), []
    for path in (Path(__file__).resolve().parent.parent / "studio" / "ui").glob("*.py"):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Compare) and any(w in ast.get_source_segment(source, node) for w in
                                                     ("method", "name")):
                found += [f"{path.name}:{c.lineno} {c.value!r}" for c in ast.walk(node)
                          if isinstance(c, ast.Constant) and c.value in names]
    assert found == []


def test_target_choices_from_model(tiny_dirs):
    gpt2 = method_tab.target_choices(str(tiny_dirs["gpt2"]))
    assert "c_attn" in gpt2 and "all-linear" in gpt2


def test_target_checkboxes_read_as_groups_then_layers(app_form, tiny_dirs):
    from studio import targets

    grouped = app_form.components[app_form.index("knob:lora:targets")]
    layers = app_form.components[app_form.index("knob:lora:targets:layers")]
    assert [c[1] for c in grouped.choices] == list(targets.GROUPS) and grouped.elem_id == "knob-lora-targets"
    assert [c[1] for c in layers.choices] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"] and layers.elem_id == "knob-lora-targets-layers"
    values = _values(app_form)
    values[app_form.index("knob:lora:targets")], values[app_form.index("knob:lora:targets:layers")] = ["mlp"], ["q_proj"]
    cfg = app_form.to_config(*values)
    assert cfg.method.knobs["targets"] == ["mlp", "q_proj"]
    back = app_form.from_config(cfg)
    assert back[app_form.index("knob:lora:targets")] == ["mlp"]
    assert back[app_form.index("knob:lora:targets:layers")] == ["q_proj"]


def test_knob_choices_follow_the_model(app_form, tiny_dirs):
    modules = app_form.components[app_form.index("knob:freeze:modules")]
    assert {"lm_head", "embed_tokens", "norm", "mlp"} <= {c[1] for c in modules.choices}
    widgets = [app_form.components[app_form.index(k)] for k in ("knob:lora:targets:layers", "knob:freeze:modules")]
    tab = method_tab.MethodTab(None, [], [(widgets[0], "layers"), (widgets[1], "modules")], None, None, None)
    # the model changes to GPT-2: its own names, and only the picks it also has
    layers, mods = method_tab._follow_model(tab)(str(tiny_dirs["gpt2"]), ["q_proj"], ["lm_head", "norm"])
    assert "c_attn" in layers["choices"] and layers["value"] == []
    assert "ln_f" in mods["choices"] and mods["value"] == ["lm_head"]


def test_estimate_changes_with_rank(tiny_dirs):
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4}})
    small = method_tab.estimate_view(cfg)
    cfg.method.knobs["r"] = 64
    big = method_tab.estimate_view(cfg)
    assert small[0] != big[0] and "trainable" in small[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_loftq_without_cuda_is_one_line_on_the_method_tab(tiny_dirs):
    from studio.method_defs.lora_init import LOFTQ_NEEDS_CUDA

    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])},
                               "method": {"name": "qlora", "r": 4, "init": "loftq"}})
    verdict = method_tab.estimate_view(cfg)[2]
    assert f"- {LOFTQ_NEEDS_CUDA}\n" in verdict and "Traceback" not in verdict
    assert LOFTQ_NEEDS_CUDA not in method_tab.estimate_view(cfg, "H100 80GB")[2]  # planned for a GPU

# ---- data, train, runs, chat -------------------------------------------------------------------------------

def test_data_preview_marks_trained_tokens(tiny_dirs):
    from studio.ui import data_tab

    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "train": {"max_seq_len": 64}})
    summary, body, fig = data_tab.preview_view(cfg, 2)
    assert "rows:" in summary and "class='trained'" in body
    assert fig.data[0].x  # the length histogram
    bad = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "data": {"path": "/no/such.jsonl"}})
    assert "Cannot read the data" in data_tab.preview_view(bad)[0]


def test_render_example_escapes_html():
    from studio.ui.data_tab import render_example

    html = render_example([("<b>user</b> ", False), ("answer", True)])
    assert "&lt;b&gt;" in html and "<mark class='trained'>answer</mark>" in html


@pytest.fixture
def trained_run(tiny_dirs, tmp_path):
    """A 2-step run started through the Train tab's handler."""
    from studio.ui import state, train_tab

    state.configure(runs_root=tmp_path / "runs")
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4},
                               "train": {"max_steps": 2, "micro_batch_size": 2, "max_seq_len": 64,
                                         "run_name": "ui-run"}})
    message = train_tab.start_training(cfg)
    assert "Started" in message
    job = state.get().job
    job.wait(240)
    return job


def test_training_view_follows_the_job(trained_run):
    from studio.ui import train_tab

    view = train_tab.training_view(trained_run)
    assert "done" in view.progress and not view.active
    assert len(view.figure.data[0].x) == 2  # two logged steps
    assert "Finished" in view.result and "adapter" in view.result
    assert "step 2/2" in view.log
    assert train_tab.status()["state"] == "done"


class _HoldAt(TrainerCallback):
    """Holds the run at the end of step ``step`` until ``release`` is set (so a test sees it running)."""

    def __init__(self, step: int, release: threading.Event):
        self.step, self.release = step, release

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            self.release.wait(120)


def _wait_for(condition, seconds: float = 120) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_page_following_a_run_gets_plain_values_and_one_update_at_the_end(tiny_dirs, tmp_path):
    from studio import training
    from studio.ui import state, train_tab

    state.configure(runs_root=tmp_path / "runs")
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4},
                               "train": {"max_steps": 3, "max_seq_len": 64, "run_name": "followed",
                                         "output_dir": str(tmp_path / "runs")}})
    release = threading.Event()
    job = training.TrainingJob(cfg, callbacks=(_HoldAt(2, release),))
    state.get().job = job.start()
    try:
        assert _wait_for(lambda: job.snapshot()["step"] >= 1)
        shown, progress, *_, timer, retry = train_tab.tick()  # a page's first tick: the timer is switched on
        assert timer.active is True and retry.visible is False and "training · step" in progress
        again = train_tab.tick(shown)  # the same page, the run going on: plain values, no component rebuilt
        assert train_tab.TICK_SECONDS <= again[6] <= 5.0 and again[7] == train_tab.RETRY_LABEL  # the next wait
        assert all(not isinstance(part, (dict, gr.components.Component)) for part in again)
    finally:
        release.set()
        job.wait(240)
    *_, timer, retry = train_tab.tick(shown)  # the run has ended: the update that stops the timer, once
    assert timer.active is False and retry.visible is False


def test_pages_poll_once_a_step_just_after_it_is_due():
    from studio.ui.train_tab import TICK_SECONDS, tick_seconds

    assert tick_seconds({"step": 0}) == TICK_SECONDS  # no step yet
    assert tick_seconds({"step": 10, "step_seconds": 0.3, "step_at": 100.0}, now=100.1) == TICK_SECONDS  # fast
    # 4 s a step, the last one ended 0.5 s ago: the next is due in 3.5 s, looked at 0.4 s after that
    assert tick_seconds({"step": 10, "step_seconds": 4.0, "step_at": 100.0}, now=100.5) == 3.9
    # the step is late (an eval, a save): every half step
    assert tick_seconds({"step": 10, "step_seconds": 4.0, "step_at": 100.0}, now=104.0) == 2.0
    # a step of minutes: never slower than every 5 s
    assert tick_seconds({"step": 2, "step_seconds": 300.0, "step_at": 100.0}, now=101.0) == 5.0
    assert tick_seconds({"step": 2, "step_seconds": 300.0, "step_at": 100.0}, now=399.0) == 5.0


def test_the_snapshot_says_when_the_last_step_ended(tiny_dirs, tmp_path):
    from studio import training

    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4},
                               "train": {"max_steps": 2, "max_seq_len": 64, "run_name": "timed",
                                         "output_dir": str(tmp_path / "runs")}})
    before = time.time()
    job = training.TrainingJob(cfg).start()
    job.wait(240)
    snap = job.snapshot()
    assert snap["state"] == "done"
    assert before < snap["step_at"] <= time.time() and 0 < snap["step_seconds"] <= snap["train_seconds"]


def test_second_start_is_refused_while_running(tiny_dirs, tmp_path):
    from studio.ui import state, train_tab

    state.configure(runs_root=tmp_path / "runs")
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "train": {"max_steps": 30,
                                                                                   "max_seq_len": 64}})
    assert "Started" in train_tab.start_training(cfg)
    try:
        assert "already going" in train_tab.start_training(cfg)
        assert "Stopping" in train_tab.stop_training()
    finally:
        state.get().job.wait(240)
    assert train_tab.training_view().active is False


def test_runs_tab_lists_and_renders(trained_run):
    from studio.ui import runs_tab

    rows = runs_tab.runs_table()
    assert rows[0][0] == "ui-run" and rows[0][1] == "done" and rows[0][2] == "lora"
    assert "r: 4" in runs_tab.run_yaml("ui-run")
    assert runs_tab.train_command("ui-run").startswith("python -m studio train ")
    fig = runs_tab.overlay(["ui-run"])
    assert fig.data[0].name == "ui-run"


def test_chat_flatten_blocks():
    from studio.ui.chat_tab import flatten

    assert flatten([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab"
    assert flatten("plain") == "plain" and flatten(None) == ""


def test_chat_streams_base_and_tuned(trained_run):
    from studio.ui import chat_tab

    runs = chat_tab.chat_runs()
    assert runs and runs[0][0] == "ui-run"
    history = [{"role": "user", "content": [{"type": "text", "text": "earlier"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}]
    last = None
    for last in chat_tab.chat_stream("hi", history, history, runs[0][1], "", 8, 0.7, 0.9, 50, 1.0, True):
        pass
    base, tuned, _note, extra_1, extra_2, box = last
    assert box == ""  # sent: the message box empties
    assert extra_1 == extra_2 == []  # no run picked to compare: the extra panes stay empty
    assert base[-1]["role"] == "assistant" and tuned[-1]["role"] == "assistant"
    assert base[-2] == {"role": "user", "content": "hi"} and base[0]["content"] == "earlier"


# ---- chat: extra panes, system prompt, evaluation ------------------------------------------------------------

@pytest.fixture
def chat_runs_root(tmp_path):
    """An empty runs folder and no chat engine yet (adapters are named after run folders, which repeat across tests)."""
    from studio.ui import state

    root = tmp_path / "runs"
    state.configure(runs_root=root)
    state.get().chat, state.get().chat_key = None, None
    yield root
    state.get().chat, state.get().chat_key = None, None


def _last(iterator):
    last = None
    for last in iterator:
        pass
    return last


def _answer(history: list) -> str:
    assert history[-1]["role"] == "assistant"
    return history[-1]["content"]


def test_chat_while_a_run_trains_loads_nothing_and_keeps_the_message(chat_runs_root, tiny_dirs, monkeypatch):
    from studio import models, training
    from studio.ui import chat_tab, state
    from tests.runfolders import make_run

    finished = str(make_run(chat_runs_root, tiny_dirs["llama"], "finished"))
    loads = []
    load = models.load
    monkeypatch.setattr(models, "load", lambda spec, *a, **k: loads.append(spec.id) or load(spec, *a, **k))
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4},
                               "train": {"max_steps": 3, "max_seq_len": 64, "run_name": "going",
                                         "output_dir": str(chat_runs_root)}})
    release = threading.Event()
    job = training.TrainingJob(cfg, callbacks=(_HoldAt(1, release),))
    state.get().job = job.start()
    try:
        assert _wait_for(lambda: job.snapshot()["step"] >= 1)
        loads.clear()  # the run's own model
        earlier = [{"role": "user", "content": "before"}, {"role": "assistant", "content": "yes"}]
        base, tuned, note, *_, box = _last(chat_tab.chat_stream("  hi ", earlier, earlier, finished, ""))
        assert note.startswith("**Not sent:** A training run is using the model")
        assert base == tuned == earlier and box == "  hi "  # nothing added; the message waits in its box
        assert loads == [] and state.get().chat is None  # no second copy of the weights beside the run
    finally:
        release.set()
        job.wait(240)
    base, tuned, note, *_, box = _last(chat_tab.chat_stream("hi", [], [], finished, ""))
    assert base[-1]["role"] == tuned[-1]["role"] == "assistant" and box == ""  # the run has ended: it answers


@pytest.mark.parametrize("method", ["lora", "ia3", "adapter"])
def test_a_run_trained_again_under_its_name_answers_with_its_new_weights(chat_runs_root, tiny_dirs, method):
    import shutil

    from studio.ui import chat_tab, state
    from tests.runfolders import make_run

    def tuned_logits(run: str) -> torch.Tensor:  # chat with the run, then the tuned pane's logits on fixed ids
        _last(chat_tab.chat_stream("hi", [], [], run, "", 4, 0.7, 0.9, 50, 1.0, True))
        with state.get().chat.using("again") as model:
            return model(input_ids=torch.tensor([[1, 2, 3, 4, 5]])).logits

    run = str(make_run(chat_runs_root, tiny_dirs["llama"], "again", method=method, seed=1))
    first = tuned_logits(run)
    shutil.rmtree(run)
    make_run(chat_runs_root, tiny_dirs["llama"], "again", method=method, seed=7)  # same folder, new weights
    second = tuned_logits(run)
    state.get().chat, state.get().chat_key = None, None
    fresh = tuned_logits(run)  # a new engine: what the run's weights give
    assert torch.allclose(second, fresh) and not torch.allclose(first, second)


def test_chat_compares_four_panes_on_one_copy(chat_runs_root, tiny_dirs):
    from studio.chat import BASE
    from studio.ui import chat_tab, state
    from tests.runfolders import make_run

    runs = [str(make_run(chat_runs_root, tiny_dirs["llama"], name, seed=seed))
            for name, seed in (("tuned", 1), ("other", 2), ("third", 3))]
    gen = (8, 0.7, 0.9, 50, 1.0, True)
    updates = list(chat_tab.chat_stream("hi", [], [], runs[0], "", *gen, "", runs[1:]))
    base, tuned, note, extra_1, extra_2, _ = updates[-1]
    assert note == "" and len(updates) > 1  # streamed, not one final answer
    assert [m["role"] for m in extra_1] == ["user", "assistant"] and extra_1[0]["content"] == "hi"
    answers = [_answer(h) for h in (base, tuned, extra_1, extra_2)]
    assert len(set(answers)) == 4  # every pane answers with its own adapter
    engine = state.get().chat
    assert engine.adapters() == ["tuned", "other", "third"] and len(engine._plan([BASE, *engine.adapters()])) == 1
    # the third pane's answer is the one that run gives as the tuned pane on its own
    alone = _last(chat_tab.chat_stream("hi", [], [], runs[1], "", *gen))
    assert _answer(alone[1]) == answers[2] and alone[3] == alone[4] == []
    # more than two runs to compare: the first two answer
    assert _last(chat_tab.chat_stream("hi", [], [], None, "", *gen, "", runs))[4][-1]["role"] == "assistant"


def test_chat_leaves_out_a_run_of_another_base(chat_runs_root, tiny_dirs, monkeypatch):
    from studio import models
    from studio.ui import chat_tab, state
    from tests.runfolders import make_run

    llama = str(make_run(chat_runs_root, tiny_dirs["llama"], "llama-run"))
    qwen = str(make_run(chat_runs_root, tiny_dirs["qwen2"], "qwen-run"))
    loads = []
    load = models.load
    monkeypatch.setattr(models, "load", lambda spec, *a, **k: loads.append(spec.id) or load(spec, *a, **k))
    earlier = [{"role": "user", "content": "before"}, {"role": "assistant", "content": "yes"}]
    base, tuned, note, extra_1, extra_2, _ = _last(chat_tab.chat_stream(
        "hi", [], [], llama, "", 6, 0.7, 0.9, 50, 1.0, True, "", [qwen, llama], earlier, []))
    assert "qwen-run is left out" in note and "one copy" in note and "llama-run already answers" in note
    assert len(note.split("  \n")) == 2  # one line each
    assert extra_1 == earlier and extra_2 == []  # untouched: neither answered
    assert base[-1]["role"] == tuned[-1]["role"] == "assistant" and state.get().chat.adapters() == ["llama-run"]
    assert loads == [str(tiny_dirs["llama"])]  # the qwen base was never loaded


def test_extra_panes_show_one_per_compared_run():
    from studio.ui import chat_tab

    one, two = chat_tab.extra_panes(["/runs/a"])
    assert one["visible"] and one["label"] == "a" and one["value"] == [] and two["visible"] is False
    assert [u["visible"] for u in chat_tab.extra_panes(["/runs/a", "/runs/b"])] == [True, True]
    assert [u["visible"] for u in chat_tab.extra_panes(None)] == [False, False]


def _spy_prompts(engine, monkeypatch) -> list:
    seen = []
    encode = engine.encode
    monkeypatch.setattr(engine, "encode", lambda messages: seen.append(messages) or encode(messages))
    return seen


def test_chat_system_prompt_reaches_every_pane(chat_runs_root, tiny_dirs, monkeypatch):
    from studio.ui import chat_panes, chat_tab
    from tests.runfolders import make_run

    plain = str(make_run(chat_runs_root, tiny_dirs["llama"], "plain"))
    trained = str(make_run(chat_runs_root, tiny_dirs["llama"], "trained", seed=2,
                           data={"system_prompt": "You are the studio bot."}))
    engine, _ = chat_panes.engine_for("", plain)
    seen = _spy_prompts(engine, monkeypatch)
    base, *_ = _last(chat_tab.chat_stream("hi", [], [], plain, "", 4, 0.7, 0.9, 50, 1.0, True, " Be brief. ",
                                          [trained]))
    assert len(seen) == 3 and all(m[0] == {"role": "system", "content": "Be brief."} for m in seen)
    assert [m["role"] for m in base] == ["user", "assistant"]  # the panes show the talk, not the system line
    seen.clear()
    _last(chat_tab.chat_stream("hi", [], [], trained, "", 4, 0.7, 0.9, 50, 1.0, True, ""))
    assert all(m[0] == {"role": "system", "content": "You are the studio bot."} for m in seen)  # the run's own
    seen.clear()
    _last(chat_tab.chat_stream("hi", [], [], plain, "", 4, 0.7, 0.9, 50, 1.0, True))
    assert seen and all(m[0]["role"] == "user" for m in seen)  # none typed, none trained with


def test_parse_prompts_reads_references():
    from studio.evaluate import parse_prompts

    items = parse_prompts("Who are you?\n\n  What is LoRA? => A low-rank adapter. \n=> no prompt\n")
    assert [(i.prompt, i.reference) for i in items] == [("Who are you?", None),
                                                        ("What is LoRA?", "A low-rank adapter.")]


@pytest.fixture
def eval_run(chat_runs_root, tiny_dirs, identity_rows):
    import json

    from tests.runfolders import make_run

    path = chat_runs_root.parent / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in identity_rows[:6]))
    return str(make_run(chat_runs_root, tiny_dirs["llama"], "evaluated", data={"path": str(path),
                                                                                 "val_fraction": 0.34}))


def test_evaluate_prompts_table_summary_and_file(eval_run, monkeypatch):
    import json
    from pathlib import Path

    from studio.ui import chat_panes, eval_panel, state

    engine, _ = chat_panes.engine_for("", eval_run)
    seen = _spy_prompts(engine, monkeypatch)
    table, summary = eval_panel.evaluate_prompts("hello => hi there\nwho are you", True, eval_run, "", "Be brief.", 6)
    assert list(table.columns) == ["prompt", "base answer", "tuned answer", "reference"] + [
        f"{m} {p}" for m in ("ROUGE-L", "BLEU", "chrF", "exact match", "contains answer") for p in ("base", "tuned")]
    assert len(table) == 4 and list(table["prompt"][:2]) == ["hello", "who are you"]  # typed, then 2 held out
    assert table["reference"][0] == "hi there" and table["ROUGE-L base"][1] == ""  # no reference, no score
    assert (table["base answer"] != table["tuned answer"]).any()
    assert "**base** loss" in summary and "**tuned** loss" in summary and "perplexity" in summary
    assert "ROUGE-L" in summary and "BLEU" in summary and "chrF" in summary
    assert "the held-out split" in summary and "\n" not in summary
    saved = Path(eval_run) / "eval.jsonl"
    assert f"`{saved}`" in summary and json.loads(saved.read_text().splitlines()[-1])["summary"]["prompts"] == 4
    assert all(m[0] == {"role": "system", "content": "Be brief."} for m in seen)
    assert state.get().chat is engine  # the chat's engine, not a second copy
    table, summary = eval_panel.evaluate_prompts("hello", False, eval_run, "", "", 4)
    assert list(table.columns) == ["prompt", "base answer", "tuned answer"] and len(table) == 1


def test_evaluate_prompts_errors_are_one_line(eval_run, monkeypatch):
    from studio import chat, evaluate
    from studio.ui import eval_panel

    assert "Pick a tuned run" in eval_panel.evaluate_prompts("hi", False, None)[1]
    assert eval_panel.evaluate_prompts("  \n", False, eval_run)[1].startswith("**Cannot evaluate:** no prompts")
    def fails(*args, **kwargs):
        raise RuntimeError("boom\nmore")

    monkeypatch.setattr(evaluate, "evaluate_run", fails)
    table, summary = eval_panel.evaluate_prompts("hi", False, eval_run)
    assert summary == "**Evaluation failed:** RuntimeError: boom" and table.empty
    monkeypatch.setattr(chat, "training_busy_message", lambda: "A training run is using the model right now")
    assert "training run" in eval_panel.evaluate_prompts("hi", False, eval_run)[1]


def test_chat_tab_wiring(tiny_dirs, tmp_path):
    from studio.ui.app import build_app

    demo = build_app(default_model=str(tiny_dirs["llama"]), runs_root=str(tmp_path))
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    for elem_id in ("chat-run", "chat-compare", "chat-base", "chat-tuned", "chat-extra-1", "chat-extra-2",
                    "chat-system", "chat-note", "eval-prompts", "eval-heldout", "eval-run", "eval-table",
                    "eval-summary"):
        assert elem_id in by_id, elem_id
    compare = by_id["chat-compare"]
    assert compare.multiselect and compare.max_choices == 2
    assert by_id["chat-extra-1"].visible is False and by_id["chat-extra-2"].visible is False
    evaluate = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "evaluate_prompts")
    assert evaluate.concurrency_limit == 1


def test_launch_view_renders_command(tiny_dirs):
    from studio.ui import gpus_panel

    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])},
                               "train": {"distributed": {"strategy": "ddp"}, "run_name": "big"}})
    estimate, config_yaml, commands = gpus_panel.launch_view(cfg, 4, "A100 80GB")
    assert "accelerate launch" in commands and "num_processes: 4" in config_yaml
    assert "Per GPU" in estimate


class _OutOfMemoryAt(TrainerCallback):
    """Raises CUDA's out-of-memory error once, at the end of ``step`` (as test_training simulates it)."""

    def __init__(self, step: int = 1):
        self.step, self.fired = step, False

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step and not self.fired:
            self.fired = True  # once: the retry carries the same callbacks
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _oom_job(tiny_dirs, tmp_path, micro_batch: int):
    from studio import training
    from studio.ui import state

    state.configure(runs_root=tmp_path / "runs")
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4},
                               "train": {"max_steps": 2, "micro_batch_size": micro_batch, "grad_accum": 1,
                                         "max_seq_len": 64, "run_name": "oom", "output_dir": str(tmp_path / "runs")}})
    job = training.TrainingJob(cfg, callbacks=(_OutOfMemoryAt(),)).start()
    state.get().job = job
    assert job.wait(240)
    return job


def test_retry_smaller_shows_after_out_of_memory_and_restarts(tiny_dirs, tmp_path):
    from studio.ui import state, train_tab

    job = _oom_job(tiny_dirs, tmp_path, micro_batch=4)
    view = train_tab.training_view()
    assert view.retry and not view.active and "out of memory" in view.result
    assert train_tab.tick()[-1].visible is True  # the poll shows the button
    message = train_tab.retry_training()
    assert message.startswith("Retrying as **oom-retry** with micro-batch 2 × accumulation 2"), message
    retry = state.get().job
    assert retry is not job and train_tab.current() is retry
    assert retry.wait(240) and retry.state == "done"
    view = train_tab.training_view()
    assert "oom-retry" in view.figure.layout.title.text and "Finished" in view.result and not view.retry
    assert train_tab.tick()[-1].visible is False
    assert "Nothing to retry" in train_tab.retry_training()


def test_retry_smaller_refuses_at_micro_batch_one(tiny_dirs, tmp_path):
    from studio.ui import train_tab

    _oom_job(tiny_dirs, tmp_path, micro_batch=1)
    assert train_tab.training_view().retry
    assert train_tab.retry_training().startswith("**Cannot retry:** train.micro_batch_size is 1 already")


def test_no_retry_offered_after_other_failures(tiny_dirs, tmp_path):
    from studio.ui import train_tab

    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])},
                               "data": {"path": str(tmp_path / "missing.jsonl")}, "train": {"max_steps": 1}})
    assert "Started" in train_tab.start_training(cfg)
    train_tab.current().wait(240)
    view = train_tab.training_view()
    assert "failed" in view.progress and not view.retry
    assert "Nothing to retry" in train_tab.retry_training()


# ---- data tab: columns, mapping, hub dataset ---------------------------------------------------------------

def _qa_file(path):
    import json

    rows = [{"question": f"what is {i}?", "answer": f"it is {i}.", "source": "quiz"} for i in range(6)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _mapping(updates) -> dict:
    """name -> (visible, choices, value) of the mapping dropdowns, from inspect_source's updates."""
    from studio.ui.data_tab import MAP_FIELDS

    return {name: (u["visible"], [c[1] for c in u["choices"]], u["value"]) for name, u in zip(MAP_FIELDS, updates)}


def test_inspect_source_shows_columns_and_the_format_fields(tmp_path):
    from studio.ui import data_tab

    path = str(_qa_file(tmp_path / "qa.jsonl"))
    text, *updates = data_tab.inspect_source(path, "auto", None, "train")
    assert "none fits" in text and "question, answer, source" in text
    assert not any(visible for visible, _, _ in _mapping(updates).values())
    text, *updates = data_tab.inspect_source(path, "prompt_completion", None, "train")
    shown = {name for name, (visible, _, _) in _mapping(updates).items() if visible}
    assert shown == {"prompt", "completion", "system"}
    assert _mapping(updates)["prompt"][1] == ["", "question", "answer", "source"]
    # with the mapping in place, detection finds the format on its own
    current = ["question" if n == "prompt" else "answer" if n == "completion" else "" for n in data_tab.MAP_FIELDS]
    text, *updates = data_tab.inspect_source(path, "auto", None, "train", *current)
    assert "**Detected format:** prompt_completion" in text
    assert _mapping(updates)["prompt"] == (True, ["", "question", "answer", "source"], "question")
    # a source without those columns drops the stale mapping
    other = tmp_path / "chat.jsonl"
    other.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    text, *updates = data_tab.inspect_source(str(other), "auto", None, "train", *current)
    assert "**Detected format:** chat" in text and _mapping(updates)["prompt"] == (False, ["", "messages"], "")
    assert "Cannot read the data" in data_tab.inspect_source(str(tmp_path / "none.jsonl"))[0]


def test_column_mapping_feeds_the_run_config(app_form, tmp_path):
    from studio.ui import data_tab

    path = str(_qa_file(tmp_path / "qa.jsonl"))
    values = _values(app_form)
    values[app_form.index("data.path")] = path
    values[app_form.index("data.format")] = "prompt_completion"
    values[app_form.index("data.columns.prompt")] = "question"
    values[app_form.index("data.columns.completion")] = "answer"
    cfg = app_form.to_config(*values)
    assert cfg.data.columns == {"prompt": "question", "completion": "answer"}
    summary, body, _ = data_tab.preview_view(cfg, 2)
    assert "**Format:** prompt_completion" in summary and "rows:** 6" in summary and "it is 0." in body
    back = app_form.from_config(cfg)
    assert back[app_form.index("data.columns.prompt")] == "question"
    assert back[app_form.index("data.columns.input")] == ""
    values[app_form.index("data.columns.prompt")] = ""
    assert app_form.to_config(*values).data.columns == {"completion": "answer"}


def test_hub_dataset_fields(app_form, tmp_path):
    from studio.ui import data_tab

    path_update, note = data_tab.use_hub(" tatsu-lab/alpaca ")
    assert path_update["value"] == "tatsu-lab/alpaca" and "hub dataset" in note
    path_update, note = data_tab.use_hub(str(_qa_file(tmp_path / "qa.jsonl")))
    assert "value" not in path_update and "file or folder" in note
    files, hub = data_tab.source_groups("hub dataset")
    assert files["visible"] is False and hub["visible"] is True
    values = _values(app_form)
    values[app_form.index("data.path")] = "tatsu-lab/alpaca"
    values[app_form.index("data.hub_config")] = "plain"
    values[app_form.index("data.split")] = "test"
    cfg = app_form.to_config(*values)
    assert (cfg.data.path, cfg.data.hub_config, cfg.data.split) == ("tatsu-lab/alpaca", "plain", "test")
