"""What the hardware sampler costs a run: training throughput with it on and off, alternating blocks in one run.

As benchmarks/ui_load.py measures pages: the CPU this runs on changes speed from minute to minute, by more than
the sampler costs, so one run trains the embedded SmolLM2-135M (quickstart preset) in blocks of ``--block`` steps
and the sampler (HardwareSampler, once a second, the run's own one switched off) is on in every other block.
The first block is warm-up; the first step of every block is left out (it straddles the switch). The figure is
real tokens per second (from the run's own token count) over the counted steps of each kind.

    python benchmarks/sampler_cost.py                 # 42 steps, blocks of 6
    python benchmarks/sampler_cost.py --steps 60 --block 5
    python benchmarks/sampler_cost.py --steps 50 --block 5 --batch 2 --seq-len 64 --threads 1   # short steps

Shorter steps (``--batch``, ``--seq-len``) make the sampler's share of each step larger, so they bound its cost
from above; ``--threads`` sets torch's threads (one wastes less on a machine loaded by other work).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
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


def sample_cost(n: int = 200) -> tuple[float, float]:
    """(wall ms, CPU ms of the calling thread) of one HardwareSampler.sample(), the mean over ``n`` calls.

    The sampler thread does this once a second, so CPU ms / 10 is the most it can take of one core, in percent:
    a bound that does not drift with the machine's load as throughput does.
    """
    sampler = HardwareSampler(None)  # not started: no thread, no file; the sampling itself only
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(n):
        sampler.sample()
    return 1000 * (time.perf_counter() - wall) / n, 1000 * (time.thread_time() - cpu) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=42)
    ap.add_argument("--block", type=int, default=6)
    ap.add_argument("--batch", type=int, help="train.micro_batch_size (default: the preset's)")
    ap.add_argument("--seq-len", type=int, help="train.max_seq_len (default: the preset's)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--only-samples", action="store_true", help="time one sample only (no training)")
    args = ap.parse_args()
    wall_ms, cpu_ms = sample_cost()
    print(f"one sample: {wall_ms:.2f} ms wall, {cpu_ms:.2f} ms CPU; once a second that is at most "
          f"{cpu_ms / 10:.3f}% of one core")
    if args.only_samples:
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig.load(ROOT / "presets" / "quickstart.yaml")
    cfg.data.path = str(ROOT / cfg.data.path)
    cfg.train.micro_batch_size = args.batch or cfg.train.micro_batch_size
    cfg.train.max_seq_len = args.seq_len or cfg.train.max_seq_len
    alt = Alternate(args.block)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.output_dir, cfg.train.max_steps, cfg.train.sample_hardware = tmp, args.steps, False
        cfg.train.save_steps = args.steps  # no checkpoint inside the measured blocks
        headless.run_headless(cfg, quiet=True, callbacks=(alt,))
    counted = [s for s in alt.steps if s[0] > args.block and (s[0] - 1) % args.block != 0]
    on = [s for s in counted if s[1]]
    off = [s for s in counted if not s[1]]
    rate = {k: sum(s[3] for s in v) / sum(s[2] for s in v) for k, v in (("on", on), ("off", off))}
    t = cfg.train
    print(f"quickstart preset, micro-batch {t.micro_batch_size} x {t.max_seq_len} tokens, "
          f"{torch.get_num_threads()} torch thread(s), {args.steps} steps")
    print(f"steps counted: {len(on)} with the sampler, {len(off)} without (blocks of {args.block})")
    print(f"tokens/s  sampler off {rate['off']:8.1f}   sampler on {rate['on']:8.1f}   "
          f"change {100 * (rate['on'] / rate['off'] - 1):+.1f}%")
    print(f"median step s  off {statistics.median(s[2] for s in off):.3f}   on {statistics.median(s[2] for s in on):.3f}")


if __name__ == "__main__":
    main()
