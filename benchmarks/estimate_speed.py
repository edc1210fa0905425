"""Time one memory.estimate() call (the UI redraws it on every slider move) beside its 10 ms budget.

    PYTHONPATH=. python benchmarks/estimate_speed.py
"""

from __future__ import annotations

import sys
import time

from studio import fit, hardware, memory
from studio.config import MethodSpec, RunConfig
from studio.known_models import KNOWN

BASELINE_MS = 10.0  # the budget: under this the breakdown can redraw on every slider move


def _time(fn, n: int) -> float:
    fn()  # warm: the method registry imports once
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1000


def main() -> int:
    cfgs = {}
    for name, knobs in (("lora", {"targets": ["all-linear"]}), ("qlora", {}), ("full", {}), ("prompt", {})):
        cfg = RunConfig()
        cfg.method = MethodSpec(name, knobs)
        cfgs[name] = cfg
    arch = KNOWN["llama-3.1-8b"]
    print(f"{'call':<34} {'mean ms':>8} {'baseline ms':>12}")
    worst = 0.0
    for name, cfg in cfgs.items():
        ms = _time(lambda: memory.estimate(arch, cfg), 300)
        worst = max(worst, ms)
        print(f"{'estimate, llama-3.1-8b, ' + name:<34} {ms:>8.3f} {BASELINE_MS:>12.1f}")
    gpu = hardware.find("4090")
    bd = memory.estimate(arch, cfgs["lora"])
    ms = _time(lambda: fit.fit(bd, gpu, arch, cfgs["lora"]), 10)
    print(f"{'fit + suggestions + largest, 4090':<34} {ms:>8.3f} {'(not UI-per-move)':>12}")
    print("within budget" if worst < BASELINE_MS else "OVER BUDGET")
    return 0 if worst < BASELINE_MS else 1


if __name__ == "__main__":
    sys.exit(main())
