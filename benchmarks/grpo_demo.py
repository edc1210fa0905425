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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import validation  # noqa: E402
from studio.reward_eval import before_after  # noqa: E402

PRESET = ROOT / "presets" / "grpo-arithmetic.yaml"
HELDOUT = ROOT / "presets" / "data" / "arithmetic-heldout.jsonl"


def run(steps: int | None = None, output: str | None = None) -> dict:
    """Train the preset and return reward_eval.before_after's comparison on the held-out prompts."""
    cfg = validation.load(PRESET)
    cfg.data.path = str(ROOT / cfg.data.path)
    cfg.train.output_dir = output or tempfile.mkdtemp(prefix="grpo-demo-")
    if steps:
        cfg.train.max_steps = steps
    return before_after(cfg, str(HELDOUT))


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
    print(f"{'sampled total, training steps 1-5 / last 5':<44}{out['sampled_first']:>8.3f}{out['sampled_last']:>8.3f}")
    print("\nprompt | base answer | GRPO answer")
    for prompt, b, a in out["answers"][:6]:
        print(f"{prompt} | {b!r} | {a!r}")


if __name__ == "__main__":
    main()
