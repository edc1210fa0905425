"""The KL-to-base guard beside its baseline on the embedded model, then the two runs combined.

    PYTHONPATH=. .venv/bin/python benchmarks/kl_guard.py [--steps 12] [--strength 2.0] [--out /tmp/kl-guard]

Trains presets/quickstart.yaml (LoRA r=16 on every linear layer, the identity set) twice with the same seed:
the baseline with train.kl_to_base at 1e-6 (the term is measured but pulls nothing) and the guarded run at
``--strength``. Prints, per logged step, the task loss (logged loss minus strength x KL) and the KL to the
base of both runs, then combines the two finished runs with TIES and prints how long that took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from studio import combine, headless, runs
from studio.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent


def train(strength: float, steps: int, out: Path, name: str) -> Path:
    cfg = RunConfig.load(ROOT / "presets" / "quickstart.yaml")
    cfg.train.max_steps, cfg.train.kl_to_base = steps, strength
    cfg.train.output_dir, cfg.train.run_name = str(out), name
    return headless.run_headless(cfg, quiet=True)


def rows(run_dir: Path, strength: float) -> list[tuple[int, float, float]]:
    """(step, task loss, KL to base) of each logged training step."""
    return [(r["step"], r["loss"] - strength * r["kl_to_base"], r["kl_to_base"])
            for r in runs.read_metrics(run_dir) if "loss" in r and "kl_to_base" in r]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--strength", type=float, default=2.0)
    parser.add_argument("--out", default="/tmp/kl-guard")
    args = parser.parse_args()
    out = Path(args.out)
    base_run = train(1e-6, args.steps, out, "baseline")
    guard_run = train(args.strength, args.steps, out, "guarded")
    print(f"{'step':>4} | {'task loss':>9} {'KL':>7} (baseline) | {'task loss':>9} {'KL':>7} (kl_to_base={args.strength})")
    for (step, lb, kb), (_, lg, kg) in zip(rows(base_run, 1e-6), rows(guard_run, args.strength)):
        print(f"{step:>4} | {lb:>9.3f} {kb:>7.3f}            | {lg:>9.3f} {kg:>7.3f}")
    t0 = time.perf_counter()
    folder = combine.combine_runs([base_run, guard_run], "0.5,0.5", "ties", "combined", out, density=0.5)
    print(f"ties combination of the two runs: {time.perf_counter() - t0:.1f} s -> {folder}")


if __name__ == "__main__":
    main()
