"""Training throughput: the tutorial recipe (../shared/baseline/seed_recipe.py) against the studio, in one run.

Both train the embedded SmolLM2-135M-Instruct with the same LoRA settings (r 8, alpha 16, q_proj and
v_proj, lr 3e-4, one epoch, linear schedule, max length 512) on the same generated chat dataset of
realistic, varied lengths. The recipe pads every example to 512 and trains in fp32; the studio packs
examples into rows (no padding) and uses bf16 autocast where the CPU has it. Both count real (non-pad)
tokens per second over the training loop only, and report the mean training loss over the run on the
same token set (every real token: the studio runs with ``data.train_on: all`` here, as the recipe does).

    python benchmarks/train_throughput.py                     # prints both figures and the ratio
    python benchmarks/train_throughput.py --rows 32 --json    # smaller, machine-readable

Each side runs in its own subprocess, one after the other, so neither slows the other.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = ROOT.parent / "shared" / "baseline" / "seed_recipe.py"

_WORDS = (
    "the model data training example answer question learning rate batch token sequence memory layer "
    "weight adapter rank value time people system small large simple often because when while which "
    "should could would every first second next last before after during about between through under "
    "over again further then once here there where why how all both each few more most other some such "
    "only own same than too very can will just don't now read write build test check measure compare "
    "improve explain describe summary result report figure table chart number percent average error loss "
    "gradient optimizer schedule warmup step epoch checkpoint resume stop start run folder file format "
    "json text chat message user assistant system prompt response helpful clear short long detailed city "
    "river mountain history science music garden kitchen recipe travel weather library museum story"
).split()


def _sentence(rng: random.Random, words: int) -> str:
    body = " ".join(rng.choice(_WORDS) for _ in range(words))
    return body[0].upper() + body[1:] + rng.choice(".!?.")


def _text(rng: random.Random, words: int) -> str:
    out, left = [], max(1, words)
    while left > 0:
        n = min(left, rng.randint(6, 18))
        out.append(_sentence(rng, n))
        left -= n
    return " ".join(out)


def make_dataset(path: Path, rows: int, seed: int) -> None:
    """Chat rows whose lengths follow a log-normal shape: median near 100 tokens, a long tail past 512."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(rows):
            total_words = min(600, max(8, int(rng.lognormvariate(4.1, 0.9))))  # exp(4.1) ~ 60 words
            ask = max(3, int(total_words * rng.uniform(0.15, 0.4)))
            row = {"messages": [{"role": "user", "content": _text(rng, ask)},
                                {"role": "assistant", "content": _text(rng, total_words - ask)}]}
            fh.write(json.dumps(row) + "\n")


def token_lengths(path: Path, model_dir: Path) -> list[int]:
    """Token length of every row as the baseline renders it (the model's chat template)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [len(tok(tok.apply_chat_template(r["messages"], tokenize=False))["input_ids"]) for r in rows]


def run_baseline(script: Path, data: Path, model_dir: Path, args) -> dict:
    cmd = [sys.executable, str(script), "--data", str(data), "--model", str(model_dir), "--rank", "8",
           "--alpha", "16", "--targets", "q_proj,v_proj", "--max-length", str(args.max_seq_len),
           "--batch", str(args.batch), "--epochs", "1", "--lr", "3e-4", "--out", str(args.work / "baseline-out")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"baseline failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def studio_config(data: Path, args, precision: str) -> dict:
    return {
        "model": {"id": "embedded"},
        "method": {"name": "lora", "r": 8, "alpha": 16.0, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
        "data": {"path": str(data), "train_on": "all", "packing": not args.no_packing},
        "train": {"epochs": 1.0, "micro_batch_size": args.studio_batch, "max_seq_len": args.max_seq_len,
                  "learning_rate": 3e-4, "scheduler": "linear", "warmup_ratio": 0.0, "precision": precision,
                  "seed": 0, "output_dir": str(args.work / "runs"), "run_name": f"bench-{precision}"},
    }


def run_studio(data: Path, args, precision: str) -> dict:
    import yaml

    cfg_path = args.work / f"studio-{precision}.yaml"
    cfg_path.write_text(yaml.safe_dump(studio_config(data, args, precision)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "studio", "train", str(cfg_path), "--quiet"], capture_output=True,
                         text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise SystemExit(f"studio failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    state = json.loads((run_dir / "state.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    tokens = rows[-1]["tokens"]
    return {"recipe": f"studio ({precision})", "steps": state["step"], "real_tokens": tokens,
            "train_seconds": state["train_seconds"],
            "real_tokens_per_second": round(tokens / state["train_seconds"], 2),
            "final_train_loss": round(state["training_loss"], 4),
            "peak_rss_mb": round(state["peak_memory_bytes"] / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="path of seed_recipe.py")
    p.add_argument("--rows", type=int, default=40, help="examples in the generated dataset")
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=4, help="the recipe's batch size")
    p.add_argument("--studio-batch", type=int, default=1, help="the studio's micro-batch (packed rows of max-seq-len)")
    p.add_argument("--precision", default="auto,fp32", help="studio precision(s), comma separated: auto,fp32,bf16")
    p.add_argument("--no-packing", action="store_true", help="studio with dynamic padding only")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not args.skip_baseline and not args.baseline.is_file():
        raise SystemExit(f"no baseline recipe at {args.baseline} (give --baseline PATH)")
    sys.path.insert(0, str(ROOT))
    from studio.models import embedded_dir

    model_dir = embedded_dir()  # both sides read the same plain fp32 safetensors copy
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        args.work = Path(tmp)
        data = args.work / "data.jsonl"
        make_dataset(data, args.rows, args.seed)
        lengths = token_lengths(data, model_dir)
        report = {"rows": args.rows, "median_tokens": statistics.median(lengths), "max_tokens": max(lengths),
                  "p90_tokens": sorted(lengths)[int(0.9 * (len(lengths) - 1))],
                  "over_max": sum(n > args.max_seq_len for n in lengths),
                  "load_before": os.getloadavg()[0], "results": []}
        started = time.time()
        if not args.skip_baseline:
            report["results"].append(run_baseline(args.baseline, data, model_dir, args))
        for precision in args.precision.split(","):
            report["results"].append(run_studio(data, args, precision.strip()))
        report["load_after"] = os.getloadavg()[0]
        report["wall_seconds"] = round(time.time() - started, 1)
    _print(report, args.json)
    return 0


def _print(report: dict, as_json: bool) -> None:
    base = next((r for r in report["results"] if r["recipe"] == "seed"), None)
    for r in report["results"]:
        if base is not None:
            r["ratio"] = round(r["real_tokens_per_second"] / base["real_tokens_per_second"], 2)
    if as_json:
        print(json.dumps(report))
        return
    print(f"data: {report['rows']} rows, median {report['median_tokens']} tokens, p90 {report['p90_tokens']}, "
          f"max {report['max_tokens']} ({report['over_max']} over max_seq_len); load {report['load_before']:.2f}"
          f" -> {report['load_after']:.2f}; {report['wall_seconds']} s")
    print(f"{'recipe':<16} {'real tok/s':>10} {'seconds':>8} {'mean loss':>9} {'ratio':>6}")
    for r in report["results"]:
        print(f"{r['recipe']:<16} {r['real_tokens_per_second']:>10.1f} {r['train_seconds']:>8.1f} "
              f"{r['final_train_loss']:>9.4f} {r.get('ratio', '-'):>6}")
    if base is None:
        return
    for r in report["results"]:
        if r is not base:
            fast, loss = r["ratio"] >= 3, r["final_train_loss"] <= base["final_train_loss"]
            print(f"target for {r['recipe']}: >= 3x real tokens/s {'met' if fast else 'NOT met'} ({r['ratio']}x), "
                  f"mean loss no worse than the recipe's {'met' if loss else 'NOT met'} "
                  f"({r['final_train_loss'] - base['final_train_loss']:+.4f})")


if __name__ == "__main__":
    sys.exit(main())
