"""``python -m studio recommend``: the recommendation helper from the command line (its rules: test_methods.py)."""

from __future__ import annotations

from studio import cli, recommend, validation
from studio.config import RunConfig


def test_cli_recommends_for_the_model_and_the_gpu(capsys):
    assert cli.main(["recommend", "--gpu", "RTX 4090 24GB", "--goal", "knowledge"]) == 0
    head, advice, sets = capsys.readouterr().out.strip().splitlines()
    assert head.startswith("embedded: 0.13B parameters") and "RTX 4090 24GB, 24 GB" in head
    assert advice.startswith("try full: a small model")  # 135M trains whole on 24 GB
    assert sets.strip() == "--set method.name=full"


def test_recommendation_applies_as_overrides():
    rec = recommend.recommend(params=7e9, memory_bytes=80 * 2**30, goal="knowledge")
    cfg = validation.with_overrides(RunConfig(), rec.overrides())
    assert cfg.method.name == "lora" and cfg.method.knobs == {"r": 64, "alpha": 128.0, "targets": ["all-linear"]}


def test_cli_refusal_is_one_line(capsys):
    assert cli.main(["recommend", "--gpu", "RTX 3060 12GB", "--set", "model.id=meta-llama/Llama-2-70b-hf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: even a 4-bit base needs about")


def test_moe_advice_says_what_lora_on_the_experts_would_cost(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["recommend", "--gpu", "H200", "--goal", "knowledge",
                     "--set", "model.id=mistralai/Mixtral-8x7B-v0.1"]) == 0
    head, advice, _ = capsys.readouterr().out.strip().splitlines()
    assert head.startswith("mistralai/Mixtral-8x7B-v0.1: 46.70B parameters")  # every expert counted
    assert "8 experts, top-2" in advice and "experts, which LoRA leaves frozen" in advice
    cost = int(advice.split("would add ~")[1].split("M")[0])
    assert 880 < cost < 930  # 8 experts x 32 layers x 3 matrices x (4096 + 14336) x rank 64 = 906M
