"""The DPO demo preset on the embedded model: held-out reward accuracy above 0.9 and greedy answers to new
prompts that take the chosen style ("In short: ...") where the base model's do not."""

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

HELD_OUT = ["What is the capital of Germany?", "How many legs does a cat have?", "What color is the sky?"]


def test_dpo_demo_moves_held_out_accuracy_and_greedy_answers(tmp_path):
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

    from studio import chat

    tuned = ["".join(chat.answer_once(str(run_dir), q, max_new_tokens=24)) for q in HELD_OUT]
    base = ["".join(chat.answer_once(str(run_dir), q, base=True, max_new_tokens=24)) for q in HELD_OUT]
    print(f"base:  {base}\ntuned: {tuned}")
    styled = lambda answers: sum(a.strip().lower().startswith("in short") for a in answers)  # noqa: E731
    assert styled(tuned) >= 2 and styled(base) == 0
