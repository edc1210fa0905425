"""The DPO demo preset on the embedded model: held-out reward accuracy above 0.9.

The preset does not yet move the greedy answers to new prompts into the chosen style ("In short: ..."):
measured on 2026-12-02, held-out reward accuracy 1.0 at every evaluation, and 0 of 3 greedy answers in the
chosen style (docs/objectives.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

def test_dpo_demo_moves_held_out_reward_accuracy(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "studio", "train", "presets/dpo-concise.yaml", "--output",
                          str(tmp_path), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    accuracy = [r["eval_reward_accuracy"] for r in rows if "eval_reward_accuracy" in r]
    print(f"dpo demo: {time.perf_counter() - started:.0f} s wall; held-out reward accuracy by eval: {accuracy}")
    assert accuracy and accuracy[-1] > 0.9
