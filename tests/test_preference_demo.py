"""The DPO demo preset on the embedded model: held-out reward accuracy above 0.9, and greedy answers to new
prompts that take the chosen style ("In short: ...") where the base model's do not (at least 4 of 5; 5 of 5
measured with bf16 autocast and with fp32, two seeds each: docs/objectives.md).

The rejected answers in presets/data/concise-preference.jsonl are the base model's own greedy answers, so
DPO pushes down the very openings greedy decoding picked ("The capital of ... is ..."), not a style the
model never used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.chat import BASE, ChatEngine, GenSettings
from studio.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
MARKER = "in short"
"""How every chosen answer in the demo data begins (and no rejected one)."""
HELD_OUT = ["What is the capital of Germany?", "How many legs does a cat have?", "What color is the sky?",
            "What is the capital of Canada?", "How many eyes does a person have?"]
"""New questions: in neither the training nor the held-out pairs."""

pytestmark = pytest.mark.slow


def greedy_answers(run_dir: Path, prompts: list[str], max_new_tokens: int = 12) -> tuple[list[str], list[str]]:
    """(base answers, tuned answers) to ``prompts``, greedy, base and tuned in one batch per prompt."""
    cfg = RunConfig.load(run_dir / "config.yaml")
    engine = ChatEngine(cfg.model, system_prompt=cfg.data.system_prompt)
    engine.add_adapter("tuned", run_dir)
    gen = GenSettings(max_new_tokens=max_new_tokens, greedy=True)
    base, tuned = [], []
    for prompt in prompts:
        texts = {}
        for texts in engine.stream([{"role": "user", "content": prompt}], panes=[BASE, "tuned"], gen=gen):
            pass
        base.append(texts[BASE])
        tuned.append(texts["tuned"])
    return base, tuned


def styled(answers: list[str]) -> int:
    """How many answers open in the chosen style."""
    return sum(a.strip().lower().startswith(MARKER) for a in answers)


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

    base, tuned = greedy_answers(run_dir, HELD_OUT)
    print(f"base:  {base}\ntuned: {tuned}")
    assert styled(base) == 0  # the embedded model does not answer this way on its own
    # measured 2026-12-02: 5 of 5 tuned answers open "In short:" in bf16 and fp32, seeds 0 and 1
    assert styled(tuned) >= 4
