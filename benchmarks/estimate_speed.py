"""Time memory.estimate() beside its budgets: the first call for a model (it traces the architecture on the
meta device) under 2 s, every later call (the UI redraws on each slider move) under 10 ms.

    PYTHONPATH=. python benchmarks/estimate_speed.py

The process first plans one small model so the one-time imports (transformers' model code, peft) are
paid before the timed first calls; that warm-up is printed too.
"""

from __future__ import annotations

import sys
import time

from studio import fit, hardware, memory
from studio.config import MethodSpec, RunConfig
from studio.known_models import KNOWN

BASELINE_MS = 10.0  # the budget: under this the breakdown can redraw on every slider move
FIRST_S = 2.0  # the budget for the first call on a model not seen before
MODELS = ("llama-3.1-8b", "mixtral-8x7b", "qwen3-30b-a3b", "gemma-3-27b", "phi-4", "gpt-oss-20b")


def _cfg(name: str, knobs: dict) -> RunConfig:
    cfg = RunConfig()
    cfg.method = MethodSpec(name, knobs)
    cfg.model.dtype = "bf16"
    return cfg


def _time(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1000


def main() -> int:
    t0 = time.perf_counter()
    memory.estimate(KNOWN["smollm2-135m"], _cfg("lora", {}))
    print(f"warm-up (imports + first trace, smollm2-135m): {time.perf_counter() - t0:.2f} s\n")
    print(f"{'call':<36} {'first s':>8} {'budget s':>9} {'mean ms':>8} {'budget ms':>10}")
    worst_ms = worst_s = 0.0
    for key in MODELS:
        for name, knobs in (("lora", {"targets": ["all-linear"]}), ("full", {})):
            cfg, arch = _cfg(name, knobs), KNOWN[key]
            t0 = time.perf_counter()
            memory.estimate(arch, cfg)
            first = time.perf_counter() - t0
            ms = _time(lambda: memory.estimate(arch, cfg), 200)
            worst_ms, worst_s = max(worst_ms, ms), max(worst_s, first)
            label = f"estimate, {key}, {name}"
            print(f"{label:<36} {first:>8.2f} {FIRST_S:>9.1f} {ms:>8.3f} {BASELINE_MS:>10.1f}")
    qlora = _cfg("qlora", {})
    ms = _time(lambda: memory.estimate(KNOWN["llama-3.1-8b"], qlora), 200)
    print(f"{'estimate, llama-3.1-8b, qlora':<36} {'(formulas)':>8} {'':>9} {ms:>8.3f} {BASELINE_MS:>10.1f}")
    arch, cfg = KNOWN["llama-3.1-8b"], _cfg("lora", {"targets": ["all-linear"]})
    gpu, bd = hardware.find("4090"), memory.estimate(arch, cfg)
    ms = _time(lambda: fit.fit(bd, gpu, arch, cfg), 5)
    print(f"{'fit + suggestions + largest, 4090':<36} {'':>8} {'':>9} {ms:>8.1f} {'(not per move)':>10}")
    ok = worst_ms < BASELINE_MS and worst_s < FIRST_S
    print(f"\nworst later call {worst_ms:.3f} ms, worst first call {worst_s:.2f} s: "
          f"{'within budget' if ok else 'OVER BUDGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
