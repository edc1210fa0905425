"""The learning-rate finder: weights restored exactly, a suggestion inside the swept range, nothing saved."""

from __future__ import annotations

import json

import pytest
import torch

from studio import cli, data, lr_finder, methods, models
from tests.test_training import make_cfg


def test_range_test_restores_the_weights_exactly(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path)
    model, tok = models.load(cfg.model)
    model = methods.get("lora").apply(model, cfg.method, methods.Context(tokenizer=tok, total_steps=20,
                                                                         model_spec=cfg.model))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = data.build(cfg, tok).train
    batches = lr_finder._batches(rows, data.Collator(tok.pad_token_id), 2, 0)
    found = lr_finder.range_test(model, batches, lr_finder.schedule(1e-5, 1.0, 24))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(found.losses) >= 10 and found.lrs == sorted(found.lrs)
    assert found.suggestion is not None and found.start <= found.suggestion <= found.end
    assert found.suggestion <= found.min_loss_lr / 10 * 1.0001


def test_suggestion_is_the_steepest_descent_with_a_margin():
    lrs = lr_finder.schedule(1e-5, 1e-1, 9)  # one point per half decade
    losses = [2.0, 2.0, 1.95, 1.6, 1.0, 0.9, 0.85, 3.0, 9.0]  # steepest between 1e-4 and 1e-3, lowest at 1e-2
    suggestion, low = lr_finder.suggest(lrs, losses)
    assert low == pytest.approx(lrs[6])
    assert suggestion == pytest.approx(lrs[3])  # the steepest point, already below low / 10
    late = [2.0, 2.0, 2.0, 2.0, 2.0, 1.9, 1.0, 0.5, 5.0]  # steepest at 1e-2, just before the lowest (3e-2)
    assert lr_finder.suggest(lrs, late) == (pytest.approx(lrs[7] / 10), pytest.approx(lrs[7]))  # the margin
    assert lr_finder.suggest(lrs, sorted(losses)) == (None, lrs[0])  # never fell: no suggestion


def test_cli_prints_the_curve_and_saves_no_run(tiny_dirs, chat_file, tmp_path, capsys, monkeypatch):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path)
    preset = tmp_path / "p.yaml"
    preset.write_text(cfg.to_yaml())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["lr-find", str(preset), "--steps", "12", "--start", "1e-4", "--end", "1", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found["lrs"]) == len(found["losses"]) >= 5
    assert found["suggestion"] is None or 1e-4 <= found["suggestion"] <= 1
    assert not (tmp_path / "runs").exists()
    assert cli.main(["lr-find", str(preset), "--start", "1", "--end", "0.1"]) == 2
    assert "0 < start < end" in capsys.readouterr().err
