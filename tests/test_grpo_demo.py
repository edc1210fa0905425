"""The shipped GRPO demo (presets/grpo-arithmetic.yaml) on the embedded model: with its fixed seed, a few
minutes of GRPO raise the mean reward of greedy answers on the held-out sums (presets/data/
arithmetic-heldout.jsonl), as benchmarks/grpo_demo.py prints and docs/benchmarks.md records."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio import validation
from studio.reward_eval import before_after

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_grpo_demo_raises_the_held_out_reward(tmp_path):
    cfg = validation.load(ROOT / "presets" / "grpo-arithmetic.yaml")
    cfg.data.path = str(ROOT / cfg.data.path)
    cfg.train.output_dir = str(tmp_path)
    out = before_after(cfg, str(ROOT / "presets" / "data" / "arithmetic-heldout.jsonl"))
    base, tuned = out["base"], out["tuned"]
    assert tuned["match"] > base["match"] and tuned["total"] > base["total"], out  # greedy, held out
    assert out["sampled_last"] >= out["sampled_first"] + 0.3, out  # the sampled answers' reward while training
