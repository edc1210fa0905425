"""What a run's tuning cost: base and tuned side by side on the general prompts and the shipped benchmarks.

    PYTHONPATH=. .venv/bin/python benchmarks/eval_after.py RUN_DIR [--run]

Reads the run's after_eval.json (written when the run's train.eval_after asked for it), or with --run (or
when the file is missing) runs the check now on every shipped check: general, studio_mc, studio_gen.
Prints Markdown tables (base, tuned, change; benchmark scores with their standard errors) and the answers
of both models to the general prompts.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import forgetting, metrics  # noqa: E402


def _bench_rows(result: dict) -> list[str]:
    by = {}
    for s in result.get("bench") or []:
        by.setdefault((s["task"], s["metric"], s["n"]), {})[s["model"]] = s
    out = ["| task | metric | n | base | tuned | change |", "|---|---|--:|--:|--:|--:|"]
    for (task, metric, n), v in by.items():
        b, t = v["base"], v["tuned"]
        out.append(f"| {task} | {metric} | {n} | {b['value']:.3f} ± {b['stderr']:.3f} | "
                   f"{t['value']:.3f} ± {t['stderr']:.3f} | {t['value'] - b['value']:+.3f} |")
    return out


def _general_rows(result: dict) -> list[str]:
    g = result["general"]
    out = [f"General prompts ({g['prompts']}, greedy, 32 new tokens):", "",
           "| metric | base | tuned | change |", "|---|--:|--:|--:|"]
    for k in metrics.METRICS:
        out.append(f"| {metrics.LABELS[k]} | {g['base'][k]:.3f} | {g['tuned'][k]:.3f} | "
                   f"{g['tuned'][k] - g['base'][k]:+.3f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--run", action="store_true", help="run the check now (all shipped checks)")
    args = ap.parse_args()
    result = None if args.run else forgetting.read(args.run_dir)
    if result is None:
        started = time.perf_counter()
        result = forgetting.run_after(args.run_dir, ["general", "studio_mc", "studio_gen"])
        print(f"check took {time.perf_counter() - started:.0f} s")
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    if result.get("error"):
        print("the check failed:", result["error"])
        return
    if result.get("general"):
        print("\n".join(_general_rows(result)), "\n")
    if result.get("bench"):
        print("\n".join(_bench_rows(result)), "\n")
    for row in (result.get("general") or {}).get("rows", []):
        base, tuned = (row["answers"][p].replace("\n", " ")[:70] for p in ("base", "tuned"))
        print(f"- {row['prompt']} ({row['reference']}): base {base!r} / tuned {tuned!r}")


if __name__ == "__main__":
    main()
