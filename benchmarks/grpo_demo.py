"""GRPO demo: held-out reward of the embedded model before and after presets/grpo-arithmetic.yaml, side by side.

    python benchmarks/grpo_demo.py [--steps N] [--output DIR]

Trains the preset (on presets/data/arithmetic.jsonl), then answers the 16 held-out sums in
presets/data/arithmetic-heldout.jsonl greedily with the base and with the tuned model, and scores both with
the preset's own rewards. Prints each reward's mean, the total, the training time and a few answers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import models, rewards, validation  # noqa: E402
from studio.data import prompts  # noqa: E402
from studio.reward_eval import greedy_answers, mean_rewards  # noqa: E402
from studio.training import TrainingJob  # noqa: E402

PRESET = ROOT / "presets" / "grpo-arithmetic.yaml"
HELDOUT = ROOT / "presets" / "data" / "arithmetic-heldout.jsonl"


def run(steps: int | None = None, output: str | None = None) -> dict:
    """Train the preset and return {'base': means, 'tuned': means, 'answers': [(prompt, base, tuned)], ...}."""
    cfg = validation.load(PRESET)
    cfg.data.path = str(ROOT / cfg.data.path)
    cfg.train.output_dir = output or tempfile.mkdtemp(prefix="grpo-demo-")
    if steps:
        cfg.train.max_steps = steps
    items = cfg.train.rewards
    rows, _ = prompts.load(cfg.data, rewards.columns_read(items), path=str(HELDOUT))
    tokens = int(cfg.train.objective.knobs.get("max_completion_length", 8))
    base, tok = models.load(cfg.model)
    before = greedy_answers(base, tok, rows, tokens)
    del base
    job = TrainingJob(cfg)
    t0 = time.perf_counter()
    job.start()
    job.wait()
    seconds = time.perf_counter() - t0
    if job.state.value != "done":
        raise SystemExit(f"training ended {job.state.value}: {job.snapshot()['message']}")
    after = greedy_answers(job.model, job.tokenizer, rows, tokens)
    return {"base": mean_rewards(rows, before, items, tok), "tuned": mean_rewards(rows, after, items, tok),
            "answers": [(r["prompt"][-1]["content"], b, a) for r, b, a in zip(rows, before, after)],
            "seconds": seconds, "steps": cfg.train.max_steps, "run_dir": str(job.run_dir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    parser.add_argument("--output", default=None, help="folder for the run (default: a temporary one)")
    args = parser.parse_args()
    out = run(args.steps, args.output)
    print(f"GRPO on {len(out['answers'])} held-out prompts, {out['steps']} steps in {out['seconds']:.0f} s "
          f"({out['run_dir']})")
    print(f"{'mean reward':<14}{'base':>8}{'GRPO':>8}")
    for key in out["base"]:
        print(f"{key:<14}{out['base'][key]:>8.3f}{out['tuned'][key]:>8.3f}")
    print("\nprompt | base answer | GRPO answer")
    for prompt, b, a in out["answers"][:6]:
        print(f"{prompt} | {b!r} | {a!r}")


if __name__ == "__main__":
    main()
