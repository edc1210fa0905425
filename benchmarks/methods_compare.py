"""Every method trained the same way on the same data, side by side: the identity set (presets/data/
identity.jsonl, a quarter held out for evaluation), the embedded SmolLM2-135M-Instruct, the same number of
steps, each method at its own default learning rate and knobs, through the studio's engine (TrainingJob).
Prints the eval loss before and after, training time and peak memory as one markdown table. Rows run one
after another inside worker processes (``--jobs``: imports are paid once per worker); a row's peak is the
process's resident set from a fresh peak (Linux clear_refs) at the row's start, shown whole and above
what the process held when the row began. A row that cannot train here is a row with its one-line reason.

    PYTHONPATH=. .venv/bin/python benchmarks/methods_compare.py [--steps 10] [--methods lora,vera,...] [--jobs 2]
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
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
                  "warmup_ratio": 0.0, "sample_hardware": False, **TRAIN_EXTRA.get(row, {})},
    })


def _memory() -> tuple[int, int]:
    """(resident bytes now, peak resident bytes since the last reset) of this process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _reset_peak() -> int:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM); return the resident bytes now."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _memory()[0]


def _one(row: str, plan: tuple) -> dict:
    """Train one row in this process and return its figures, its memory counted from a fresh peak."""
    from studio import training
    from studio.config import ConfigError

    before = _reset_peak()
    with tempfile.TemporaryDirectory() as out:
        try:
            job = training.TrainingJob(_config(row, plan, out))
            start = time.perf_counter()
            job.start()
        except ConfigError as err:  # refused before anything loads: the row shows the one line
            return {"row": row, "error": str(err).splitlines()[0]}
        job.wait(3600)
        seconds = time.perf_counter() - start
        if job.state != "done":
            message = str(job.snapshot().get("message") or job.state).splitlines() or [job.state]
            return {"row": row, "error": message[0]}
        return {"row": row, "eval_loss": job.result.get("final_eval_loss"),
                "train_seconds": job.result.get("train_seconds"), "wall_seconds": seconds,
                "peak_rss": _memory()[1], "start_rss": before}


def _base(plan: tuple) -> dict:
    """The untouched base's eval loss on the same held-out rows, through the same Trainer evaluation."""
    from studio import data, models
    from studio.train_parts import StudioTrainer, TokenCountingCollator, build_args

    before, start = _reset_peak(), time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        cfg = _config("lora", plan, out)
        model, tok = models.load(cfg.model)
        prepared = data.build(cfg, tok)
        args = build_args(cfg, Path(out), lr=1e-4, total_steps=plan[0], has_eval=True)
        trainer = StudioTrainer(model=model, args=args, eval_dataset=prepared.eval,
                                data_collator=TokenCountingCollator(data.Collator(tok.pad_token_id)))
        loss = trainer.evaluate()["eval_loss"]
    return {"row": "base (untrained)", "eval_loss": loss, "train_seconds": 0.0,
            "wall_seconds": time.perf_counter() - start, "peak_rss": _memory()[1], "start_rss": before}


def _rows_here(rows: list[str], plan: tuple, threads: int) -> None:
    """Run ``rows`` one after another in this process, one JSON line each (the parent reads them)."""
    import torch

    torch.set_num_threads(threads)
    for row in rows:
        try:
            result = _base(plan) if row == "base" else _one(row, plan)
        except Exception as err:  # one row's failure is that row's line, not the end of the others
            result = {"row": row, "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        print(json.dumps(result), flush=True)


def _worker(rows: list[str], plan: tuple, threads: int) -> dict[str, dict]:
    """One child process training ``rows`` in turn; rows it did not report show its last error line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    flags = ["--steps", str(plan[0]), "--seq", str(plan[1]), "--batch", str(plan[2]), "--threads", str(threads)]
    proc = subprocess.Popen([sys.executable, __file__, "--one", ",".join(rows), *flags], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # stderr drains in its own thread so a chatty child never blocks on a full pipe
    err_lines: list[str] = []
    drain = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    drain.start()
    got = {}
    for line in proc.stdout:
        if line.startswith('{"row"'):  # the rows' own lines; the engine prints other dicts too
            result = json.loads(line)
            got[result["row"] if result["row"] != "base (untrained)" else "base"] = result
            print(f"{result['row']}: {result}", file=sys.stderr, flush=True)
    proc.wait()
    drain.join(5)
    tail = ([ln.strip() for ln in err_lines if ln.strip()] or ["no output"])[-1][:160]
    return {row: got.get(row, {"row": row, "error": tail}) for row in rows}


def _fmt(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def table(results: list[dict]) -> str:
    """The rows as one markdown table; a row that failed shows its reason."""
    out = ["| method | eval loss after | train time | wall time (load, train, eval, save) | peak RSS | "
           "peak RSS above the row's start |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            out.append(f"| {r['row']} | not trained: {r['error']} | | | | |")
            continue
        out.append(f"| {r['row']} | {_fmt(r['eval_loss'], '.3f')} | {_fmt(r['train_seconds'], '.1f')} s | "
                   f"{_fmt(r.get('wall_seconds'), '.1f')} s | {r['peak_rss'] / 2**20:,.0f} MiB | "
                   f"{(r['peak_rss'] - r['start_rss']) / 2**20:,.0f} MiB |")
    return "\n".join(out)


def _logged(paths: list[str]) -> dict[str, dict]:
    """Rows from the progress lines runs wrote to stderr ("row: {...}"); the first file that has a row wins."""
    found: dict[str, dict] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            _, sep, rest = line.partition(": ")
            if sep and rest.startswith("{'row'"):
                result = ast.literal_eval(rest)
                found.setdefault("base" if result["row"] == "base (untrained)" else result["row"], result)
    return found


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
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes; each trains its share of the rows one after another")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per row")
    parser.add_argument("--from-logs", default="", help="comma-separated stderr logs of earlier runs: print their "
                        "rows as one table (for a run split over several invocations)")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    plan = (args.steps, args.seq, args.batch)
    if args.one:
        _rows_here(args.one.split(","), plan, args.threads)
        return 0
    from studio import methods

    skip = {r.strip() for r in args.skip.split(",") if r.strip()}
    rows = [r.strip() for r in args.methods.split(",") if r.strip()] or [*methods.names(), *EXTRA]
    rows = ["base", *(r for r in rows if r not in skip)]
    if args.from_logs:
        found = _logged(args.from_logs.split(","))
        missing = [r for r in rows if r not in found]
        print(table([found[r] for r in rows if r in found]))
        print(f"\nNot measured: {', '.join(missing) or 'none'}.")
        return 0
    start = time.perf_counter()
    jobs = max(1, min(args.jobs, len(rows)))
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        shares = [pool.submit(_worker, rows[i::jobs], plan, args.threads) for i in range(jobs)]
        found = {row: result for share in shares for row, result in share.result().items()}
    results = [found[row] for row in rows]
    print(f"Embedded SmolLM2-135M-Instruct (fp32), identity set (30 train / 10 eval rows), {args.steps} steps of "
          f"{args.batch} rows, max_seq_len {args.seq}, seed 0, each method's default learning rate; "
          f"{args.jobs} row(s) at a time, {args.threads} torch thread(s) each, {time.perf_counter() - start:.0f} s "
          f"in all. Machine: {_machine()}.\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
