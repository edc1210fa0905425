"""Hardware detection, the GPU catalog and the fit verdict."""

from __future__ import annotations

import pytest

from studio import fit, hardware, memory
from studio.config import ConfigError, MethodSpec, RunConfig
from studio.known_models import KNOWN


def _cfg(**train) -> RunConfig:
    cfg = RunConfig()
    cfg.method = MethodSpec("lora", {"r": 16, "targets": ["all-linear"]})
    cfg.model.dtype = "bf16"
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_detect_answers_without_a_gpu():
    devices = hardware.detect()
    assert devices and devices[0].total_bytes >= 0 and devices[0].kind in ("cuda", "cpu")


def test_catalog_covers_the_common_cards_and_find_matches_fragments():
    for name in ("T4", "L4", "A10", "A100 40GB", "A100 80GB", "H100", "H200", "4090", "5090", "3060"):
        assert any(name in n for n in hardware.CATALOG), name
    assert hardware.find("a100 80").total_bytes == 80 * 1024 ** 3
    with pytest.raises(ConfigError):
        hardware.find("voodoo2")
    with pytest.raises(ConfigError):
        hardware.find("A100")  # 40 and 80 GB: ambiguous


def test_fit_verdicts_and_suggestions():
    arch = KNOWN["llama-3.1-8b"]
    cfg = _cfg(micro_batch_size=4, max_seq_len=2048)
    bd = memory.estimate(arch, cfg)
    big = fit.fit(bd, hardware.find("H200"), arch, cfg)
    assert big.verdict == "fits" and big.spare_bytes > 0 and not big.changes
    small = fit.fit(bd, hardware.find("4090"), arch, cfg)
    assert small.verdict == "does not fit" and small.changes
    assert all(c.peak_bytes < bd.peak_bytes for c in small.changes)
    assert any("checkpointing" in c.text for c in small.changes)


def test_largest_batch_and_length_fit_and_one_more_does_not():
    arch = KNOWN["llama-2-7b"]
    cfg = _cfg(max_seq_len=1024, gradient_checkpointing=True)
    gpu = hardware.find("4090")
    v = fit.fit(memory.estimate(arch, cfg), gpu, arch, cfg)
    assert v.max_micro_batch >= 1
    over = _cfg(max_seq_len=1024, gradient_checkpointing=True, micro_batch_size=v.max_micro_batch + 1)
    assert memory.estimate(arch, over).peak_bytes > gpu.total_bytes
    assert 8 <= v.max_seq_len <= arch.max_position


def test_fit_offers_attention_only_lora_for_a_mixture_of_experts():
    arch = KNOWN["mixtral-8x7b"]
    cfg = _cfg(max_seq_len=1024)
    cfg.method = MethodSpec("full", {})
    bd = memory.estimate(arch, cfg)
    assert bd.expert_weights > 0.9 * bd.weights * 10  # ~97% of Mixtral's weights are experts
    v = fit.fit(bd, hardware.find("H200"), arch, cfg)
    moe = [c for c in v.changes if "experts of every layer stay frozen" in c.text]
    assert v.verdict == "does not fit" and moe and moe[0].peak_bytes < bd.peak_bytes / 3


def test_fit_offers_the_optimizer_in_backward_for_full_training():
    arch = KNOWN["llama-3.2-1b"]
    cfg = _cfg(max_seq_len=512, micro_batch_size=1)
    cfg.method = MethodSpec("full", {})
    bd = memory.estimate(arch, cfg)
    v = fit.fit(bd, hardware.find("3060 12"), arch, cfg)
    step = [c for c in v.changes if "in backward" in c.text]
    assert step and step[0].overrides == ["train.optimizer_in_backward=True", "train.max_grad_norm=0.0"]
    assert bd.peak_bytes - step[0].peak_bytes > 0.5 * bd.gradients  # every gradient gives way to the largest
    lora = _cfg(max_seq_len=512, micro_batch_size=1)
    assert not any("in backward" in c.text for c in fit.fit(memory.estimate(arch, lora), hardware.find("T4"), arch,
                                                               lora).changes)
