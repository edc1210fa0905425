"""The learning-rate finder's suggestion against a small sweep, on the embedded SmolLM2-135M, in one run.

The finder runs its range test on the quickstart preset (LoRA r 16 on the identity set); then the same preset
trains for ``--steps`` steps at each learning rate of a half-decade grid, and the final training loss (mean of the
last 5 logged steps) and the held-out loss (``data.val_fraction``) of each are printed beside the finder's
suggestion. "Agrees" means the suggestion lies within a factor of ~3 (one grid step) of the sweep's best.

    python benchmarks/lr_find_vs_sweep.py                        # finder 40 steps, sweep 1e-4..1e-2 at 30 steps
    python benchmarks/lr_find_vs_sweep.py --steps 20 --grid 3e-4,1e-3,3e-3
    python benchmarks/lr_find_vs_sweep.py --finder-steps 20 --steps 12 --grid 1e-3,3e-3,1e-2 --batch 2 --seq-len 128

``--batch`` and ``--seq-len`` shrink every step (finder and sweep alike) for a machine loaded by other work;
``--threads`` sets torch's threads. Each sweep point is evaluated once, at its end.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import torch

from studio import headless, lr_finder, runs
from studio.config import RunConfig

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=str(ROOT / "presets" / "quickstart.yaml"))
    ap.add_argument("--finder-steps", type=int, default=40)
    ap.add_argument("--steps", type=int, default=30, help="training steps per sweep point")
    ap.add_argument("--grid", default="1e-4,3e-4,1e-3,3e-3,1e-2")
    ap.add_argument("--batch", type=int, help="train.micro_batch_size (default: the preset's)")
    ap.add_argument("--seq-len", type=int, help="train.max_seq_len (default: the preset's)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig.load(args.preset)
    cfg.data.path = str(ROOT / cfg.data.path) if not Path(cfg.data.path).is_absolute() else cfg.data.path
    cfg.data.val_fraction = 0.2
    cfg.train.micro_batch_size = args.batch or cfg.train.micro_batch_size
    cfg.train.max_seq_len = args.seq_len or cfg.train.max_seq_len
    print(f"{Path(args.preset).name}: {cfg.model.id} model, {cfg.method.name} r {cfg.method.knobs.get('r')}, micro-batch "
          f"{cfg.train.micro_batch_size} x {cfg.train.max_seq_len} tokens, {torch.get_num_threads()} torch thread(s)")
    t0 = time.perf_counter()
    found = lr_finder.find_lr(cfg, steps=args.finder_steps, start=1e-6, end=1e-1)
    # each line goes out as soon as it is known: a long sweep cut short still leaves what it measured
    print(f"finder ({len(found.lrs)} steps, {time.perf_counter() - t0:.0f} s): {found.summary()}", flush=True)
    print(f"{'lr':>9} {'train loss (last 5)':>20} {'eval loss':>10} {'seconds':>8}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lr in [float(x) for x in args.grid.split(",")]:
            rows.append(_sweep_point(cfg, lr, args.steps, tmp))
            lr, train, evl, secs = rows[-1]
            print(f"{lr:9.1e} {train:20.4f} {evl if evl is not None else float('nan'):10.4f} {secs:8.0f}", flush=True)
    best = min(rows, key=lambda r: r[2] if r[2] is not None else r[1])
    print(f"sweep best: {best[0]:.1e} (lowest held-out loss)")
    if found.suggestion:
        ratio = found.suggestion / best[0]
        print(f"finder suggestion {found.suggestion:.2e} vs sweep best {best[0]:.1e}: factor {ratio:.2f} "
              f"({abs(math.log10(ratio)):.2f} decades) -> {'agrees' if abs(math.log10(ratio)) <= 0.5 else 'differs'}")


def _sweep_point(cfg: RunConfig, lr: float, steps: int, tmp: str) -> tuple:
    """(lr, mean of the last 5 train losses, final held-out loss, seconds) of one run of ``cfg`` at ``lr``."""
    point = RunConfig.from_dict(cfg.to_dict())
    point.train.learning_rate, point.train.max_steps = lr, steps
    point.train.eval_steps, point.train.save_steps = steps + 1, steps  # one evaluation: the final one
    point.train.output_dir, point.train.run_name = tmp, f"lr-{lr:g}"
    point.train.sample_hardware = False
    t1 = time.perf_counter()
    run_dir = headless.run_headless(point, quiet=True)
    state = runs.read_state(run_dir)
    losses = [r["loss"] for r in runs.read_metrics(run_dir) if "loss" in r]
    return lr, sum(losses[-5:]) / len(losses[-5:]), state.get("final_eval_loss"), time.perf_counter() - t1


if __name__ == "__main__":
    main()
