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
