"""Preference objectives on tiny models: each trains through its TRL trainer and its reward margin rises; the
result loads back with identical logits; the PEFT reference is the same weights; a DPO run started from an
SFT run starts from its adapter; bad rows are skipped with their reason; a stopped DPO run resumes on its curve."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from studio import (headless, memory, methods, models, objectives, preference_train, runs, start_from, training,
                    validation)
from studio.config import ConfigError, ModelSpec, RunConfig
from studio.data import DataError, preference
from tests.test_training import At, run_job


def _pairs(n: int = 8) -> list[dict]:
    return [{"prompt": f"q{i}?", "chosen": "yes yes yes!", "rejected": f"no {i} no."} for i in range(n)]


@pytest.fixture
def pair_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _pairs()))
    return path


def pref_cfg(tiny_dirs, data_path, tmp_path, objective="dpo", method=None, **train) -> RunConfig:
    base = {"max_steps": 6, "micro_batch_size": 4, "learning_rate": 1e-2, "output_dir": str(tmp_path / "runs"),
            "precision": "fp32", "max_seq_len": 64, "save_steps": 3, "run_name": objective,
            "objective": objective}
    return validation.from_dict({"model": {"id": str(tiny_dirs["llama"])},
                                 "method": method or {"name": "lora", "r": 4, "targets": ["all-linear"]},
                                 "data": {"path": str(data_path)}, "train": {**base, **train}})


def _margins(run_dir) -> list[float]:
    return [r["reward_margin"] for r in runs.read_metrics(run_dir) if r.get("reward_margin") is not None]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto", "simpo"])
def test_objective_trains_its_margin_rises_and_the_result_loads_back(tiny_dirs, pair_file, tmp_path, objective):
    job = run_job(pref_cfg(tiny_dirs, pair_file, tmp_path, objective, max_steps=8))
    assert job.state == "done", job.snapshot()["message"]
    margins = _margins(job.run_dir)
    assert len(margins) >= 3 and margins[-1] > margins[0] + 1e-3, margins
    adapter = job.run_dir / "adapter"
    assert not (adapter / preference_train.REF_ADAPTER).exists()  # TRL's frozen copy is not part of the result
    ids = torch.tensor([[10, 20, 30, 40, 50]])
    trained = job.model.eval()
    base, _ = models.load(ModelSpec(id=str(tiny_dirs["llama"])))
    loaded = methods.load_result(base, adapter)
    assert torch.equal(_logits(trained, ids), _logits(loaded, ids))


def test_peft_reference_is_the_adapter_switched_off_not_a_copy(tiny_dirs, pair_file, tmp_path):
    cfg = pref_cfg(tiny_dirs, pair_file, tmp_path)
    model, tok = models.load(cfg.model)
    base_numel = sum(p.numel() for p in model.parameters())
    model = methods.get("lora").apply(model, cfg.method)
    obj = objectives.get("dpo")
    assert not preference_train.needs_reference_copy(obj, methods.get("lora"))
    pairs = preference_train.build_data(cfg, tok, obj)
    trainer = preference_train.build_trainer(cfg, obj, model, tok, pairs, output_dir=tmp_path / "ck", lr=1e-3,
                                             total_steps=2, callbacks=[])
    assert trainer.ref_model is None  # TRL runs the reference as this model with its adapter off
    frozen = {p.data_ptr(): p.numel() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    assert sum(frozen.values()) == base_numel  # the base weights exist once
    # full fine-tuning keeps a reference copy, and the estimate counts it
    assert preference_train.needs_reference_copy(obj, methods.get("full"))
    arch, _ = memory.resolve_arch(cfg.model)
    full = pref_cfg(tiny_dirs, pair_file, tmp_path, method={"name": "full"})
    plain, dpo, orpo = (memory.estimate(arch, validation.with_overrides(full, [f"train.objective={name}"]), 1, "cpu")
                        for name in ("sft", "dpo", "orpo"))
    assert dpo.weights == 2 * plain.weights and orpo.weights == plain.weights
    assert orpo.activations > plain.activations  # chosen and rejected: two sequences per row


class _Capture(TrainerCallback):
    def __init__(self):
        self.weights = None

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.weights = {n: p.detach().clone() for n, p in model.named_parameters() if ".default." in n}


def test_dpo_from_an_sft_run_starts_from_its_adapter(tiny_dirs, pair_file, tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}?"},
                                                       {"role": "assistant", "content": "yes yes yes!"}]})
                              for i in range(8)))
    sft = run_job(pref_cfg(tiny_dirs, chat, tmp_path, "sft", max_steps=3, run_name="sft"))
    assert sft.state == "done"
    cfg = pref_cfg(tiny_dirs, pair_file, tmp_path, "dpo", max_steps=2, run_name="dpo-on-sft")
    cfg.model.adapter_from = str(sft.run_dir)
    seen = _Capture()
    job = run_job(cfg, seen)
    assert job.state == "done", job.snapshot()["message"]
    saved = load_file(str(sft.run_dir / "adapter" / "adapter_model.safetensors"))
    assert saved and seen.weights
    for name, tensor in saved.items():
        key = next(k for k in seen.weights if k.replace(".default", "").endswith(name.replace("base_model.model.", "")))
        assert torch.equal(seen.weights[key], tensor), name
    assert RunConfig.load(job.run_dir / "config.yaml").model.adapter_from == str(sft.run_dir)
    assert (sft.run_dir.name, str(sft.run_dir)) in start_from.finished_runs(tmp_path / "runs")  # the UI's picker
    assert _margins(job.run_dir)[0] == 0.0  # the reference is the SFT run itself: no margin before a step
    bad = pref_cfg(tiny_dirs, pair_file, tmp_path, "dpo", method={"name": "ia3"})
    bad.model.adapter_from = str(sft.run_dir)
    with pytest.raises(ConfigError, match="that run trained with method lora"):
        training.TrainingJob(bad).start()
    with pytest.raises(ConfigError, match="kto needs at least 2 rows"):
        training.TrainingJob(pref_cfg(tiny_dirs, pair_file, tmp_path, "kto", micro_batch_size=1)).start()


BAD_ROWS = [
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "chosen and rejected are the same"),
    ({"prompt": "q", "rejected": "no"}, "chosen is missing"),
    ({"prompt": "q", "chosen": "  ", "rejected": "no"}, "chosen is empty"),
    ({"prompt": "q" * 80, "chosen": "yes", "rejected": "no"}, "no chosen tokens left"),
]


@pytest.mark.parametrize("row,reason", BAD_ROWS)
def test_each_bad_row_kind_is_skipped_with_its_reason(tiny_dirs, tmp_path, row, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [row] + _pairs(2)))
    cfg = pref_cfg(tiny_dirs, path, tmp_path)
    pairs = preference.build(cfg, models.load_tokenizer(cfg.model), paired=True)
    assert pairs.stats.rows == 2 and pairs.stats.skipped == 1
    assert reason in pairs.stats.skipped_examples[0]


def test_transcripts_split_at_the_shared_prefix_and_no_pairs_is_one_line(tiny_dirs, tmp_path):
    turn = [{"role": "user", "content": "hi"}]
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"chosen": turn + [{"role": "assistant", "content": "hello!"}],
                                "rejected": turn + [{"role": "assistant", "content": "go."}]}))
    cfg = pref_cfg(tiny_dirs, path, tmp_path)
    tok = models.load_tokenizer(cfg.model)
    row = preference.build(cfg, tok, paired=True).train[0]
    assert row["prompt"] == turn and row["chosen"][0]["content"] == "hello!"
    path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "a"}))
    with pytest.raises(DataError, match="no preference rows left") as err:
        preference.build(cfg, tok, paired=True)
    assert "\n" not in str(err.value)
    path.write_text(json.dumps({"prompt": "q", "completion": "a", "label": True}))
    with pytest.raises(DataError, match="use train.objective: kto"):
        preference.build(cfg, tok, paired=True)


def test_headless_prints_one_warning_and_a_stopped_dpo_run_resumes_on_its_curve(tiny_dirs, tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [BAD_ROWS[0][0]] + _pairs()))
    whole = headless.run_headless(pref_cfg(tiny_dirs, path, tmp_path, run_name="whole"), quiet=True)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1 row skipped" in warnings[0] and "the same" in warnings[0]
    part = run_job(pref_cfg(tiny_dirs, path, tmp_path, run_name="part"), At(3, lambda j: j.stop()))
    assert part.state == "stopped"
    resumed = run_job(None, resume_dir=part.run_dir)
    assert resumed.state == "done"
    want = {r["step"]: r["loss"] for r in runs.read_metrics(whole) if "loss" in r}
    got = {r["step"]: r["loss"] for r in runs.read_metrics(part.run_dir) if "loss" in r}
    assert sorted(got) == sorted(want) == list(range(1, 7))
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_ui_shows_pairs_side_by_side_and_the_form_keeps_the_chosen_objective(tiny_dirs, tmp_path):
    import gradio as gr

    from studio.ui import data_tab
    from studio.ui.form import Form
    from studio.ui.objective_panel import build_objective_panel

    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _pairs(3)))
    cfg = pref_cfg(tiny_dirs, path, tmp_path)
    summary, body, _ = data_tab.preview_view(cfg, 2)
    assert "preference" in summary and body.count("class='pair'") == 2
    assert "<mark class='chosen'>yes yes yes!</mark>" in body and "<mark class='rejected'>no 0 no.</mark>" in body
    with gr.Blocks():
        form = Form()
        build_objective_panel(form)
    values = form.from_config(validation.with_overrides(cfg, ["train.objective.beta=0.3"]))
    assert values[0] == "dpo" and values[form.index("objknob:dpo:beta")] == 0.3
    values = [c.value for c in form.components]
    values[0] = "kto"
    values[form.index("objknob:kto:desirable_weight")] = 1.5
    values[form.index("objknob:dpo:beta")] = 0.7  # another objective's knob stays out of the config
    assert form.to_config(*values).train.objective.to_dict() == {"name": "kto", "beta": 0.1,
                                                                 "desirable_weight": 1.5, "undesirable_weight": 1.0}
    values[form.index("model.adapter_from")] = "/etc"  # the start-from run, typed in the browser: checked
    with pytest.raises(ConfigError, match="model.adapter_from: /etc"):
        form.to_config(*values)


def test_objective_and_start_point_round_trip_through_yaml_and_set():
    cfg = validation.with_overrides(RunConfig(), ["train.objective=simpo", "train.objective.gamma=1",
                                                  "model.adapter_from=runs/sft-1"])
    again = validation.from_yaml(cfg.to_yaml())
    assert again.train.objective.to_dict() == {"name": "simpo", "gamma": 1.0}
    assert again.model.adapter_from == "runs/sft-1" and again.to_yaml() == cfg.to_yaml()
    with pytest.raises(ConfigError, match="train.objective.beta: unknown setting for orpo|train.objective.gamma"):
        validation.with_overrides(cfg, ["train.objective.name=orpo"])
