"""Every method and every optimizer through the real engine: TrainingJob in its thread, a run folder on disk,
the result loaded back onto a fresh base. tests/test_methods.py drives the methods directly; this is the path
the UI and ``python -m studio train`` take (the Trainer, AdaLoRA's step hook, QLoRA's 4-bit load...)."""

from __future__ import annotations

import pytest
import torch

from studio import methods, models, runs
from studio.config import MethodSpec
from studio.train_parts import OPTIMIZERS
from test_training import make_cfg, run_job

# Knobs that keep each method small enough for the tiny model (ranks within its 32-wide k/v projections).
KNOBS = {
    "full": {}, "freeze": {"top_blocks": 1}, "lora": {"r": 4}, "qlora": {"r": 4, "compute_dtype": "fp32"},
    "lora_8bit": {"r": 4}, "adalora": {"init_r": 6, "target_r": 2}, "ia3": {}, "prefix": {"num_virtual_tokens": 4},
    "prompt": {"num_virtual_tokens": 4}, "ptuning": {"num_virtual_tokens": 4}, "adapter": {"size": 8},
    "bitfit": {"norms": True},  # the tiny Llama has no biases; its norms give BitFit something to train
    "waveft": {"n_frequency": 500},  # at most in x out of the tiny model's smallest layer
    **{name: {} for name in ("loha", "lokr", "gralora", "hira", "miss", "delora", "glora", "deft", "peanut", "lily",
                             "vera", "pvera", "randlora", "vblora", "unilora", "tinylora", "oft", "boft", "hra",
                             "road", "psoft", "osf", "fourierft", "c3a", "supertuning", "ln_tuning")},
}


def test_every_method_has_a_row():
    assert sorted(KNOBS) == sorted(methods.names())


@pytest.mark.parametrize("name", sorted(KNOBS))
def test_method_trains_through_the_engine_and_loads_back(name, tiny_dirs, chat_file, tmp_path):  # noqa: F811
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=4, run_name=name)
    cfg.method = MethodSpec(name, dict(KNOBS[name]))
    job = run_job(cfg)
    assert job.state == "done", job.snapshot().get("message")
    state = runs.read_state(job.run_dir)
    assert state["step"] == 4 and state["adapter_bytes"] > 0
    losses = [r["loss"] for r in runs.read_metrics(job.run_dir)]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    spec = methods.result_spec(job.run_dir / "adapter")
    assert spec.name == name
    base, _ = models.load(methods.model_spec_for(cfg.model, spec))
    tuned = methods.load_result(base, job.run_dir / "adapter")
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.isfinite(tuned(input_ids=ids).logits).all()


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_steps(optimizer, tiny_dirs, chat_file, tmp_path):  # noqa: F811
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=3, optimizer=optimizer, run_name=optimizer,
                   learning_rate=0.05)
    job = run_job(cfg)
    assert job.state == "done", job.snapshot().get("message")
    trained = methods.load_result(models.load(cfg.model)[0], job.run_dir / "adapter")
    lora_b = [p for n, p in trained.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "LoRA B starts at zero: the optimizer never stepped"
