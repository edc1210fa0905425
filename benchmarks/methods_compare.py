"""Every method trained the same way on the same data, side by side: the identity set (presets/data/
identity.jsonl, a quarter held out for evaluation), the embedded SmolLM2-135M-Instruct, the same number of
steps, each method at its own default learning rate and knobs. Prints the eval loss before and after,
training time and peak memory (the process's maximum resident set: each method runs in its own process,
through the studio's engine, TrainingJob) as one markdown table. A row that cannot train here is a row
with its one-line reason.

    PYTHONPATH=. .venv/bin/python benchmarks/methods_compare.py [--steps 10] [--methods lora,vera,...] [--jobs 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# SmolLM2 has no biases (BitFit trains its norms). The quantised methods train too, but on a CPU their time
# measures bitsandbytes' 4-bit / int8 CPU kernels as much as the method.
KNOBS = {"bitfit": {"norms": True}}
EXTRA = {"lora+pissa": ("lora", {"init": "pissa"}), "lora+olora": ("lora", {"init": "olora"}),
         "lora+eva": ("lora", {"init": "eva"}), "lora+corda": ("lora", {"init": "corda"}),
         "qlora+loftq": ("qlora", {"init": "loftq"}),
         "lora+loraplus": ("lora", {}), "lora+neftune": ("lora", {})}
TRAIN_EXTRA = {"lora+loraplus": {"loraplus_ratio": 16.0}, "lora+neftune": {"neftune_alpha": 5.0}}


def _config(row: str, plan: tuple, out: str):
    """The run for ``row``; ``plan`` is (steps, max_seq_len, micro-batch)."""
    from studio.config import RunConfig

    steps, seq, batch = plan

    name, knobs = EXTRA.get(row, (row, KNOBS.get(row, {})))
    return RunConfig.from_dict({
        "model": {"id": "embedded"}, "method": {"name": name, **knobs},
        "data": {"path": str(ROOT / "presets" / "data" / "identity.jsonl"), "val_fraction": 0.25, "packing": False},
        "train": {"max_steps": steps, "micro_batch_size": batch, "max_seq_len": seq, "eval_steps": steps,
                  "precision": "fp32", "seed": 0, "output_dir": out, "run_name": row.replace("+", "_"),
                  "warmup_ratio": 0.0, **TRAIN_EXTRA.get(row, {})},
    })


def _one(row: str, plan: tuple, threads: int) -> dict:
    """Train one row in this process and return its figures (run by the parent in a child process)."""
    import torch

    from studio import training
    from studio.config import ConfigError

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        try:
            job = training.TrainingJob(_config(row, plan, out))
        except ConfigError as err:  # refused before anything loads: the row shows the one line
            return {"row": row, "error": str(err).splitlines()[0]}
        start = time.perf_counter()
        job.start()
        job.wait(3600)
        seconds = time.perf_counter() - start
        if job.state != "done":
            message = str(job.snapshot().get("message") or job.state).splitlines() or [job.state]
            return {"row": row, "error": message[0]}
        return {"row": row, "eval_loss": job.result.get("final_eval_loss"),
                "train_seconds": job.result.get("train_seconds"), "wall_seconds": seconds,
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _base(plan: tuple) -> dict:
    """The untouched base's eval loss on the same held-out rows, through the same Trainer evaluation."""
    from studio import data, models
    from studio.train_parts import StudioTrainer, TokenCountingCollator, build_args

    with tempfile.TemporaryDirectory() as out:
        cfg = _config("lora", plan, out)
        model, tok = models.load(cfg.model)
        prepared = data.build(cfg, tok)
        args = build_args(cfg, Path(out), lr=1e-4, total_steps=plan[0], has_eval=True)
        trainer = StudioTrainer(model=model, args=args, eval_dataset=prepared.eval,
                                data_collator=TokenCountingCollator(data.Collator(tok.pad_token_id)))
        loss = trainer.evaluate()["eval_loss"]
    return {"row": "base (untrained)", "eval_loss": loss, "train_seconds": 0.0,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _child(row: str, plan: tuple, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    flags = ["--steps", str(plan[0]), "--seq", str(plan[1]), "--batch", str(plan[2]), "--threads", str(threads)]
    proc = subprocess.run([sys.executable, __file__, "--one", row, *flags], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"row": row, "error": tail[:160]}
    return json.loads(lines[-1])


def _fmt(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def table(results: list[dict]) -> str:
    """The rows as one markdown table; a row that failed shows its reason."""
    out = ["| method | eval loss after | train time | wall time (load, train, eval, save) | peak memory (RSS) |",
           "|---|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            out.append(f"| {r['row']} | not trained: {r['error']} | | | |")
            continue
        out.append(f"| {r['row']} | {_fmt(r['eval_loss'], '.3f')} | {_fmt(r['train_seconds'], '.1f')} s | "
                   f"{_fmt(r.get('wall_seconds'), '.1f')} s | {r['peak_rss'] / 2**20:,.0f} MiB |")
    return "\n".join(out)


def _machine() -> str:
    """CPU model, core count and whether the bf16 matrix units are there (from /proc/cpuinfo)."""
    flags, model = set(), platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    has = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")) if flag in flags]
    return f"{model}, {os.cpu_count()} cores, {' and '.join(has) or 'no AVX512-BF16 / AMX'}, no GPU used"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per method")
    parser.add_argument("--seq", type=int, default=128, help="max_seq_len")
    parser.add_argument("--batch", type=int, default=4, help="micro-batch size")
    parser.add_argument("--methods", default="", help="comma-separated rows (default: every method + LoRA extras)")
    parser.add_argument("--skip", default="", help="comma-separated rows to leave out")
    parser.add_argument("--jobs", type=int, default=1, help="rows trained at once (each in its own process)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per row")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    plan = (args.steps, args.seq, args.batch)
    if args.one:
        result = _base(plan) if args.one == "base" else _one(args.one, plan, args.threads)
        print(json.dumps(result), flush=True)
        return 0
    from studio import methods

    skip = {r.strip() for r in args.skip.split(",") if r.strip()}
    rows = [r.strip() for r in args.methods.split(",") if r.strip()] or [*methods.names(), *EXTRA]
    rows = ["base", *(r for r in rows if r not in skip)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(_child, row, plan, args.threads) for row in rows]
        for row, future in zip(rows, futures):
            print(f"{row}: {future.result()}", file=sys.stderr, flush=True)
    results = [f.result() for f in futures]
    print(f"Embedded SmolLM2-135M-Instruct (fp32), identity set (30 train / 10 eval rows), {args.steps} steps of "
          f"{args.batch} rows, max_seq_len {args.seq}, seed 0, each method's default learning rate; "
          f"{args.jobs} row(s) at a time, {args.threads} torch thread(s) each, {time.perf_counter() - start:.0f} s "
          f"in all. Machine: {_machine()}.\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
