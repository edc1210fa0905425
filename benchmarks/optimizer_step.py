"""One AdamW step over the embedded model's LoRA q,v parameters: torch's for-loop, foreach and fused kernels.

    PYTHONPATH=. .venv/bin/python benchmarks/optimizer_step.py [--threads 1]

The tensors are the shapes LoRA r 8 on q_proj and v_proj gives SmolLM2-135M (30 layers: 460,800 parameters
in 120 tensors). Median milliseconds of 20 steps after 3 warm-up steps, the three side by side in one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

SHAPES = [(8, 576), (576, 8), (8, 576), (192, 8)] * 30  # lora_A / lora_B of q_proj and v_proj, 30 layers
KINDS = {"for-loop (adamw on a CPU)": {"foreach": False}, "foreach": {"foreach": True},
         "fused (adamw_fused)": {"fused": True}}


def step_ms(options: dict, repeats: int = 20) -> float:
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-4, **options)
    for _ in range(3):
        opt.step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        opt.step()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{sum(a * b for a, b in SHAPES)} parameters in {len(SHAPES)} tensors, {args.threads} threads")
    for name, options in KINDS.items():
        print(f"{name:<28} {step_ms(options):8.2f} ms")


if __name__ == "__main__":
    main()
