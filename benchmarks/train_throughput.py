"""Training throughput: the tutorial recipe, TRL's SFTTrainer and the studio, in one run, against the machine's limit.

All train the embedded SmolLM2-135M-Instruct with the same LoRA settings (r 8, alpha 16, dropout 0, q_proj
and v_proj), lr 3e-4, linear schedule without warmup, loss on every real token, on the same natural-text
chat set (presets/data/assistant_chat.jsonl: 47 hand-written conversations, 61 to 1,051 tokens, median
~200, with the model's chat template). The recipe (../shared/baseline/seed_recipe.py) pads every example
to max_seq_len and trains in fp32, batch 4; TRL packs (best-fit, padding-free rows with position_ids) and
the studio packs, one row of max_seq_len per step, both in the run's precision (--precision).

    python benchmarks/train_throughput.py                                  # max_seq_len 512
    python benchmarks/train_throughput.py --max-seq-len 2048 --every 3 --recipe-epochs 0.25
    python benchmarks/train_throughput.py --only trl,studio,studio+chunked --json

Printed for each: real (non-pad) tokens/s over the training loop, mean training loss, peak memory in the
loop, model FLOPs utilisation (MFU) against this machine's measured matmul peak, and ratios to TRL and
to the recipe. Each contender runs in its own process, one after the other (throughput_contenders.py).
FLOPs per token: see flops_per_token and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# the shared baseline lives beside the project folder (or beside the folder of its checkouts)
BASELINES = [up / "shared" / "baseline" / "seed_recipe.py" for up in (ROOT.parent, ROOT.parent.parent)]
DEFAULT_BASELINE = next((b for b in BASELINES if b.is_file()), BASELINES[0])
DEFAULT_DATA = ROOT / "presets" / "data" / "assistant_chat.jsonl"
RUNNER = Path(__file__).resolve().parent / "throughput_contenders.py"

# name -> RunConfig sections to change from the studio's rows ({"train": {...}, "data": {...}, "model": {...}})
STUDIO_VARIANTS = {
    "studio": {},
    "studio+chunked": {"train": {"loss_chunk_tokens": 256}},
    "studio+chunked+fused": {"train": {"loss_chunk_tokens": 256, "optimizer": "adamw_fused"}},
}
# the ablation: each lever turned against the studio's default on its own (--ablation runs "studio" and these)
LEVERS = {
    "no packing (padded rows)": {"data": {"packing": False}},
    "chunked loss (256)": {"train": {"loss_chunk_tokens": 256}},
    "gradient checkpointing": {"train": {"gradient_checkpointing": True}},
    "fused AdamW": {"train": {"optimizer": "adamw_fused"}},
    "torch.compile": {"train": {"compile": True}},
    "eager attention": {"model": {"attn_implementation": "eager"}},
    "optimizer in backward (no clipping)": {"train": {"optimizer_in_backward": True, "max_grad_norm": 0.0}},
}
NOT_ON_CPU = {
    "activation offload": "moves activations from accelerator memory to host memory; on a CPU they are in host "
                          "memory already, there is nothing to offload to",
    "varlen / flash attention": "flash_attention_2 (the varlen path that keeps packed rows apart without a mask) "
                                "needs CUDA; on a CPU packed rows go through sdpa with a block-diagonal mask",
    "FlexAttention": "torch 2.13 raises 'FlexAttention does not support backward on CPU' on its first training "
                     "step; on CUDA packed rows are kept apart without a mask by flash_attention_2",
    "Liger kernels": "liger-kernel 0.8.5 with triton 3.9.0 installs here, but its first kernel fails with "
                     "'RuntimeError: 0 active drivers ([]). There should only be one.': Triton has no CPU driver",
}


def matmul_peak(dtype: torch.dtype, seconds: float = 2.0) -> float:
    """This machine's dense matmul rate in FLOP/s for ``dtype`` (best of repeated n x n products)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = 8192 if device == "cuda" else 2048  # large enough that launch overhead is noise
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    best = float("inf")
    for _ in range(2):
        a @ b  # warm-up: kernels picked, caches filled
    end, tries = time.perf_counter() + seconds, 0
    while time.perf_counter() < end or tries < 3:  # at least 3 timed products, however slow the machine is
        tries += 1
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def flops_per_token(config, targets: tuple[str, ...], rank: int, context: float) -> float:
    """Training FLOPs per token of a LoRA step (forward + backward), counting multiply-adds as 2 FLOPs.

    P = the frozen matmul weights a token passes (every decoder linear, and the output head); A = the
    LoRA weights (rank x (in + out) per adapted linear). Forward 2P + 2A; backward for activations 2P + 2A
    (every layer passes the gradient down to the lowest adapter); backward for weights 2A only (the base is
    frozen). Attention: QK^T and AV are 2 x 2 x context x heads x head_dim per layer in forward, twice that
    in backward. Norms, activations functions, softmax and the optimizer are left out (under 1%).
    """
    h, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    q, kv = heads * head_dim, getattr(config, "num_key_value_heads", heads) * head_dim
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
              "gate_proj": (h, config.intermediate_size), "up_proj": (h, config.intermediate_size),
              "down_proj": (config.intermediate_size, h)}
    frozen = layers * sum(i * o for i, o in shapes.values()) + config.vocab_size * h
    lora = layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)
    attention = 4 * layers * context * q
    return 4 * frozen + 6 * lora + 3 * attention


def token_lengths(path: Path, model_dir: Path, max_len: int) -> list[int]:
    """Token length of every row as the recipe renders it (the model's chat template), cut to max_len."""
    from throughput_contenders import conversation_ids

    return [len(ids) for ids in conversation_ids(path, model_dir, max_len)]


def run(kind: str, settings: dict, work: Path, timeout: float | None = None) -> dict:
    """One contender in its own process; its JSON line, or {"error": ...} when it failed or ran out of time."""
    path = work / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', settings.get('name', kind))}.json"
    path.write_text(json.dumps(settings))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        out = subprocess.run([sys.executable, str(RUNNER), kind, str(path)], capture_output=True, text=True,
                             cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"contender": settings.get("name", kind), "error": f"stopped after {timeout:.0f} s (--timeout)"}
    if out.returncode:
        tail = out.stderr.strip().splitlines()[-3:]
        return {"contender": settings.get("name", kind), "error": " | ".join(tail)}
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def truncated_copy(model_dir: Path, layers: int, out: Path) -> Path:
    """The model's first ``layers`` decoder blocks, its embeddings, final norm and head, saved to ``out``.

    Real weights and the real vocabulary (so the loss is natural text's and the head as large), fewer blocks:
    a run with tens of steps for every contender fits on a shared CPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def contenders(only: str, ablation: bool) -> list[tuple[str, str, dict]]:
    """(name, runner, settings) of each contender asked for, in order; --ablation adds each lever's row."""
    out = []
    for name in [n.strip() for n in only.split(",") if n.strip()]:
        if name == "recipe":
            out.append((name, "recipe", {}))
        elif name.startswith("trl"):
            out.append((name, "trl", {"liger": name == "trl+liger"}))
        else:
            out.append((name, "studio", {"sections": STUDIO_VARIANTS[name]}))
    if ablation:
        if "studio" not in [c[0] for c in out]:
            out.append(("studio", "studio", {"sections": {}}))
        out += [(f"lever: {lever}", "studio", {"sections": sections}) for lever, sections in LEVERS.items()]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="path of seed_recipe.py")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="chat .jsonl ({'messages': [...]} rows)")
    p.add_argument("--every", type=int, default=1, help="train on every N-th row only (a shorter run, same spread)")
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--epochs", type=float, default=1.0, help="epochs of TRL and the studio")
    p.add_argument("--recipe-epochs", type=float, default=1.0, help="epochs of the recipe (slow at long lengths)")
    p.add_argument("--recipe-batch", type=int, default=4)
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"), help="TRL's and the studio's")
    p.add_argument("--model-dir", type=Path, help="a model folder (default: the embedded model's safetensors copy)")
    p.add_argument("--layers", type=int, help="train the model's first N decoder blocks only (real weights)")
    p.add_argument("--threads", type=int, help="torch threads of every contender and of the peak (default: torch's)")
    p.add_argument("--method", default="lora", choices=("lora", "qlora"), help="TRL's and the studio's (QLoRA: NF4)")
    p.add_argument("--only", default="recipe,trl," + ",".join(STUDIO_VARIANTS), help="contenders, comma separated")
    p.add_argument("--ablation", action="store_true", help="also each lever against the studio's default")
    p.add_argument("--timeout", type=float, help="seconds a contender may take before it is stopped")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if "recipe" in args.only.split(",") and not args.baseline.is_file():
        raise SystemExit(f"no baseline recipe at {args.baseline} (give --baseline PATH)")
    sys.path.insert(0, str(ROOT))
    from transformers import AutoConfig

    from studio.models import embedded_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model_dir or embedded_dir()  # every contender reads the same plain safetensors copy
    bench_dir = Path(tempfile.mkdtemp(prefix="studio-bench-data-"))
    if args.layers:
        model_dir = truncated_copy(model_dir, args.layers, bench_dir / f"first-{args.layers}-blocks")
    if args.every > 1:
        rows = args.data.read_text(encoding="utf-8").splitlines()[::args.every]
        args.data = bench_dir / args.data.name
        args.data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    lengths = token_lengths(args.data, model_dir, args.max_seq_len)
    context = sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)  # keys a real token attends to, on average
    config = AutoConfig.from_pretrained(model_dir)
    fpt = flops_per_token(config, ("q_proj", "v_proj"), 8, context)
    peaks = {"bf16": matmul_peak(torch.bfloat16), "fp32": matmul_peak(torch.float32)}
    report = {"rows": len(lengths), "tokens": sum(lengths), "median_tokens": statistics.median(lengths),
              "max_tokens": max(lengths), "max_seq_len": args.max_seq_len, "flops_per_token": fpt,
              "layers": config.num_hidden_layers, "matmul_peak_tflops": {k: round(v / 1e12, 5) for k, v in peaks.items()},
              "threads": torch.get_num_threads(), "load_before": os.getloadavg()[0], "results": []}
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        common = {"data": str(args.data), "model_dir": str(model_dir), "max_seq_len": args.max_seq_len,
                  "epochs": args.epochs, "precision": args.precision, "work": tmp, "method": args.method,
                  "model_id": str(model_dir) if args.model_dir or args.layers else "embedded",
                  "threads": args.threads}
        for name, kind, own in contenders(args.only, args.ablation):
            if kind == "recipe":
                own = {"recipe": str(args.baseline), "recipe_batch": args.recipe_batch,
                       "recipe_epochs": args.recipe_epochs}
            res = run(kind, {**common, "name": name, **own}, Path(tmp), args.timeout)
            res["contender"], res["precision"] = res.get("contender", name), "fp32" if kind == "recipe" else args.precision
            if "error" not in res:
                res["mfu"] = round(res["real_tokens_per_second"] * fpt / peaks[res["precision"]], 4)
            report["results"].append(res)
            print(json.dumps(res), file=sys.stderr, flush=True)  # each as it comes: a long run shows progress
    report["load_after"] = os.getloadavg()[0]
    _print(report, args.json)
    return 0


def _print(report: dict, as_json: bool) -> None:
    ok = [r for r in report["results"] if "error" not in r]
    trl = next((r for r in ok if r["contender"].startswith("TRL")), None)
    recipe = next((r for r in ok if r["contender"].startswith("recipe")), None)
    for r in ok:
        for key, base in (("vs_trl", trl), ("vs_recipe", recipe)):
            if base is not None:
                r[key] = round(r["real_tokens_per_second"] / base["real_tokens_per_second"], 2)
                r[key + "_memory"] = round(_memory(r) / _memory(base), 2)
    if as_json:
        print(json.dumps(report))
        return
    peaks = report["matmul_peak_tflops"]
    print(f"data: {report['rows']} rows, {report['tokens']} tokens, median {report['median_tokens']}, max "
          f"{report['max_tokens']} (max_seq_len {report['max_seq_len']}); {report['layers']} decoder blocks; "
          f"{report['flops_per_token'] / 1e6:.1f} MFLOP/token; matmul peak bf16 {peaks['bf16'] * 1e3:.1f} GFLOP/s, fp32 "
          f"{peaks['fp32'] * 1e3:.1f} GFLOP/s; {report['threads']} threads; load {report['load_before']:.2f} -> "
          f"{report['load_after']:.2f}")
    memory = "peak CUDA MiB" if any(r.get("peak_cuda_mib") for r in ok) else "peak RSS MiB (growth)"
    print(f"{'contender':<34} {'steps':>5} {'real tok/s':>10} {'seconds':>8} {'mean loss':>9} {'loss after':>10} {memory:>22} "
          f"{'MFU':>7} {'vs TRL':>6} {'mem vs TRL':>10} {'vs recipe':>9}")
    for r in report["results"]:
        if "error" in r:
            print(f"{r['contender']:<34} failed: {r['error']}")
            continue
        print(f"{r['contender']:<34} {r['steps']:>5} {r['real_tokens_per_second']:>10.1f} {r['train_seconds']:>8.1f} "
              f"{r['mean_loss']:>9.4f} {r['loss_after']:>10.4f} {_memory_text(r):>22} {r['mfu']:>7.2%} {r.get('vs_trl', '-'):>6} "
              f"{r.get('vs_trl_memory', '-'):>10} {r.get('vs_recipe', '-'):>9}")
    _print_ablation(ok)


def _memory(r: dict) -> float:
    return r.get("peak_cuda_mib") or r["peak_rss_mib"]


def _memory_text(r: dict) -> str:
    if r.get("peak_cuda_mib"):
        return f"{r['peak_cuda_mib']:.0f}"
    return f"{r['peak_rss_mib']:.0f} ({r['train_rss_growth_mib']:+.0f})"


def _print_ablation(ok: list[dict]) -> None:
    base = next((r for r in ok if r["contender"] == "studio"), None)
    levers = [r for r in ok if r["contender"].startswith("lever: ")]
    if base is None or not levers:
        return
    print(f"\nablation against the studio's default ({base['real_tokens_per_second']:.1f} tok/s, "
          f"{_memory(base):.0f} MiB, mean loss {base['mean_loss']:.4f}):")
    print(f"{'lever (on)':<34} {'real tok/s':>10} {'speed':>6} {'peak MiB':>9} {'memory':>7} {'loss change':>11} "
          f"{'loss after change':>17}")
    for r in levers:
        print(f"{r['contender'][7:]:<34} {r['real_tokens_per_second']:>10.1f} "
              f"{r['real_tokens_per_second'] / base['real_tokens_per_second']:>5.2f}x {_memory(r):>9.0f} "
              f"{_memory(r) / _memory(base) - 1:>+7.1%} {r['mean_loss'] - base['mean_loss']:>+11.4f} "
              f"{r['loss_after'] - base['loss_after']:>+17.4f}")
    for lever, why in NOT_ON_CPU.items():
        if not torch.cuda.is_available():
            print(f"{lever:<34} not on this CPU: {why}")


if __name__ == "__main__":
    sys.exit(main())
