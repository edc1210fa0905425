"""What the hardware sampler costs a run: training throughput with it on and off, alternating blocks in one run.

As benchmarks/ui_load.py measures pages: the CPU this runs on changes speed from minute to minute, by more than
the sampler costs, so one run trains the embedded SmolLM2-135M (quickstart preset) in blocks of ``--block`` steps
and the sampler (HardwareSampler, once a second, the run's own one switched off) is on in every other block.
The first block is warm-up; the first step of every block is left out (it straddles the switch). The figure is
real tokens per second (from the run's own token count) over the counted steps of each kind.

    python benchmarks/sampler_cost.py                 # 42 steps, blocks of 6
    python benchmarks/sampler_cost.py --steps 60 --block 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from studio import headless, training
from studio.config import RunConfig
from studio.hw_sampler import HardwareSampler



class Alternate(TrainerCallback):
    """Switches a HardwareSampler on in odd blocks, off in even ones; times every step and its tokens."""

    def __init__(self, block: int):
        self.block, self.sampler = block, None
        self.steps: list[tuple[int, bool, float, int]] = []  # step, sampler on, seconds, tokens
        self.t, self.tokens = 0.0, 0

    def on_step_begin(self, args, state, control, **kw):
        step = state.global_step  # 0-based index of the step about to run
        if step % self.block == 0:
            want = (step // self.block) % 2 == 1
            if want and self.sampler is None:
                self.sampler = HardwareSampler(None).start()
            elif not want and self.sampler is not None:
                self.sampler.stop()
                self.sampler = None
        self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        # the job's Progress callback runs first and has put this step's token count into the snapshot
        tokens = training.current_job().snapshot().get("tokens") or 0
        self.steps.append((state.global_step, self.sampler is not None, time.perf_counter() - self.t,
                           tokens - self.tokens))
        self.tokens = tokens

    def on_train_end(self, args, state, control, **kw):
        if self.sampler is not None:
            self.sampler.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=42)
    ap.add_argument("--block", type=int, default=6)
    args = ap.parse_args()
    cfg = RunConfig.load(ROOT / "presets" / "quickstart.yaml")
    cfg.data.path = str(ROOT / cfg.data.path)
    alt = Alternate(args.block)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.output_dir, cfg.train.max_steps, cfg.train.sample_hardware = tmp, args.steps, False
        cfg.train.save_steps = args.steps  # no checkpoint inside the measured blocks
        headless.run_headless(cfg, quiet=True, callbacks=(alt,))
    counted = [s for s in alt.steps if s[0] > args.block and (s[0] - 1) % args.block != 0]
    on = [s for s in counted if s[1]]
    off = [s for s in counted if not s[1]]
    rate = {k: sum(s[3] for s in v) / sum(s[2] for s in v) for k, v in (("on", on), ("off", off))}
    print(f"steps counted: {len(on)} with the sampler, {len(off)} without (blocks of {args.block})")
    print(f"tokens/s  sampler off {rate['off']:8.1f}   sampler on {rate['on']:8.1f}   "
          f"change {100 * (rate['on'] / rate['off'] - 1):+.1f}%")
    print(f"median step s  off {statistics.median(s[2] for s in off):.3f}   on {statistics.median(s[2] for s in on):.3f}")


if __name__ == "__main__":
    main()
