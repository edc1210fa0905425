"""The stay-close-to-base term: zero while the adapter is the identity, rising as it moves, computed on the
one model with its adapter off (no second copy), refused where there is no base; and a headless run that
logs it as its own metric (with the data quality counts written into the run folder)."""

from __future__ import annotations

import copy
import gc
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from studio import base_guard, headless, methods, runs
from studio.config import ConfigError, MethodSpec, RunConfig
from tests.conftest import tiny_tokenizer
from tests.runfolders import perturb

IDS = torch.tensor([[5, 17, 42, 9, 77, 3, 120, 64], [8, 8, 30, 31, 32, 2, 0, 0]])
BATCH = {"input_ids": IDS, "attention_mask": (IDS != 0).long(),
         "labels": torch.where(torch.arange(8) >= 3, IDS, torch.full_like(IDS, -100))}


def _lora(tiny_dirs, name="lora"):
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    spec = MethodSpec(name, {"targets": ["all-linear"]} if name == "lora" else {})
    return methods.get(name).apply(base, spec, methods.Context(tokenizer=tiny_tokenizer(), total_steps=1))


def _kl(model) -> float:
    with torch.no_grad():
        return float(base_guard.kl_to_base(model, BATCH, model(**BATCH).logits))


def _live_parameters() -> int:
    gc.collect()
    return sum(isinstance(o, torch.nn.Parameter) for o in gc.get_objects())


def test_zero_at_start_and_rising_as_the_adapter_moves(tiny_dirs):
    model = _lora(tiny_dirs)
    assert _kl(model) == pytest.approx(0.0, abs=1e-7)  # LoRA's B starts at zero: the identity
    values = []
    for scale in (0.02, 0.1, 0.4):
        perturb(model, seed=1, scale=scale)
        values.append(_kl(model))
    assert 0 < values[0] < values[1] < values[2]


def test_no_second_copy_and_gradients_reach_the_adapter(tiny_dirs, monkeypatch):
    model = _lora(tiny_dirs)
    perturb(model, seed=2, scale=0.2)
    model.train()

    def no_copy(*a, **k):
        raise AssertionError("the guard copied the model")

    monkeypatch.setattr(copy, "deepcopy", no_copy)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_copy)
    guard = base_guard.BaseGuard(model, strength=1.0)
    before = _live_parameters()
    plain = lambda m, inputs, ret, n: (m(**inputs).loss, m(**inputs))  # noqa: E731 - Trainer.compute_loss's shape
    loss = guard.loss(plain, model, dict(BATCH))
    assert _live_parameters() == before  # the base's logits came from the same weights
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    task = float(model(**BATCH).loss.detach())
    assert float(loss.detach()) > task and guard.pop_mean() == pytest.approx(_kl(model), rel=1e-4)


def test_methods_without_a_base_inside_are_refused(tiny_dirs):
    with pytest.raises(ConfigError) as err:
        base_guard.BaseGuard(_lora(tiny_dirs, "full"), strength=0.5)
    assert len(err.value.problems) == 1 and "no base to compare with" in err.value.problems[0]


def test_headless_run_logs_the_term_and_the_quality_counts(tiny_dirs, tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"prompt": f"question {i % 6}?", "completion": f"answer {i % 6} is here."} for i in range(12)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4},
                               "data": {"path": str(path), "packing": False, "dedup": "exact"},
                               "train": {"max_steps": 3, "micro_batch_size": 2, "learning_rate": 5e-2,
                                         "precision": "fp32", "output_dir": str(tmp_path / "runs"),
                                         "run_name": "kl", "kl_to_base": 1.0}})
    run_dir = headless.run_headless(cfg, quiet=True)
    kl = [r["kl_to_base"] for r in runs.read_metrics(run_dir) if "loss" in r]
    assert len(kl) == 3 and kl[0] == pytest.approx(0.0, abs=1e-6) and kl[-1] > 0
    quality = runs.read_state(run_dir)["data_quality"]
    assert quality["rows_in"] == 12 and quality["rows_kept"] == 6 and quality["filters"][0]["dropped"] == 6
