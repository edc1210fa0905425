"""EWC, the second stay-close-to-base guard: zero at the start weights, rising as they move, its gradient the
Fisher-weighted pull back; the guards' memory in the estimate; both terms on the Train tab's loss panel; and a
headless run of a method that trains the base weights, logging the penalty as its own metric."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from studio import base_guard, data, headless, memory, methods, runs
from studio.config import MethodSpec, RunConfig
from studio.known_models import KNOWN
from studio.ui import plots
from tests.conftest import tiny_tokenizer


def _full(tiny_dirs):
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    return methods.get("full").apply(base, MethodSpec("full", {}), methods.Context(tokenizer=tiny_tokenizer(),
                                                                                    total_steps=1))


def _fisher(model):
    tok = tiny_tokenizer()
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"answer {i}"}]}
            for i in range(4)]
    examples = data.tokenize_rows(rows, tok, max_len=64).examples
    return base_guard.fisher_diagonal(model, examples, data.Collator(tok.pad_token_id))


def _shift(model, scale: float, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * scale)


def test_zero_at_the_start_weights_and_rising_as_they_move(tiny_dirs):
    model = _full(tiny_dirs)
    fisher = _fisher(model)
    assert all((f >= 0).all() for f in fisher.values()) and sum(float(f.sum()) for f in fisher.values()) > 0
    ewc = base_guard.EWC(model, strength=1.0, fisher=fisher)
    assert float(ewc.penalty().detach()) == 0.0
    values = []
    for _ in range(3):
        _shift(model, 0.01)
        values.append(float(ewc.penalty().detach()))
    assert 0 < values[0] < values[1] < values[2]
    assert ewc.extra_bytes() == 8 * sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_its_gradient_pulls_each_weight_back_by_its_importance(tiny_dirs):
    model = _full(tiny_dirs)
    ewc = base_guard.EWC(model, strength=1.0, fisher=_fisher(model))
    _shift(model, 0.05)
    model.zero_grad(set_to_none=True)
    ewc.penalty().backward()
    name, p = next((n, p) for n, p in model.named_parameters() if p.requires_grad and ewc.fisher[n].sum() > 0)
    expected = ewc.fisher[name] * (p.detach() - ewc.anchor[name])  # d/dtheta of 1/2 F (theta - theta*)^2
    assert torch.allclose(p.grad, expected, atol=1e-9) and p.grad.abs().sum() > 0


def test_the_guards_memory_is_in_the_estimate():
    arch = KNOWN["llama-3.1-8b"]
    cfg = RunConfig()
    cfg.train.micro_batch_size, cfg.train.max_seq_len = 2, 1024
    plain = memory.estimate(arch, cfg)
    assert plain.guard == 0
    cfg.train.ewc = 100.0
    ewc = memory.estimate(arch, cfg)
    assert ewc.guard == 8 * ewc.trainable_params and ewc.peak_bytes > plain.peak_bytes
    cfg.train.ewc, cfg.train.kl_to_base = 0.0, 0.5
    kl = memory.estimate(arch, cfg)
    assert kl.guard == 2 * 2 * 1024 * arch.vocab_size * 4 and kl.phases["forward"] > plain.phases["forward"]


def test_the_train_chart_draws_both_terms():
    rows = [{"step": s, "loss": 2.0 - s / 10, "kl_to_base": s / 100, "ewc": s / 1000} for s in range(1, 4)]
    names = {t.name: list(t.y) for t in plots.train_dashboard(rows).data}
    assert names["KL to base"] == [0.01, 0.02, 0.03] and names["EWC penalty"] == [0.001, 0.002, 0.003]
    assert "KL to base" not in {t.name for t in plots.train_dashboard([{"step": 1, "loss": 1.0}]).data}


def test_headless_full_fine_tuning_logs_the_penalty(tiny_dirs, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"q {i}?", "completion": f"a {i}."}) for i in range(8)))
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "full"},
                               "data": {"path": str(path), "packing": False},
                               "train": {"max_steps": 3, "micro_batch_size": 2, "learning_rate": 1e-2,
                                         "precision": "fp32", "output_dir": str(tmp_path / "runs"),
                                         "run_name": "ewc", "ewc": 10.0, "max_seq_len": 128, "warmup_ratio": 0.0}})
    run_dir = headless.run_headless(cfg, quiet=True)
    values = [r["ewc"] for r in runs.read_metrics(run_dir) if "loss" in r]
    assert len(values) == 3 and values[0] == pytest.approx(0.0, abs=1e-12) and values[-1] > values[1] > 0
