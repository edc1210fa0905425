"""Every registered method applied to the embedded model (SmolLM2-135M-Instruct) with its default knobs:
trainable parameters (count and % of the base), whether the count declared from the config alone equals
the real one, and the size of the saved result. Prints a markdown table.

    PYTHONPATH=. .venv/bin/python benchmarks/methods_table.py [--skip qlora,lora_8bit] [--only vera,lora+pissa]

Each row is also printed to stderr as soon as it is measured, so a long run shows what it has.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from studio import methods, models
from studio.config import ConfigError, MethodSpec, ModelSpec
from studio.methods import Context

# SmolLM2 is Llama-shaped and has no biases: BitFit alone would train nothing, so it runs with its norms
KNOBS = {"bitfit": {"norms": True}}
# LoRA initialisations that change the result: PiSSA's is saved as a plain LoRA of twice the rank
EXTRA_ROWS = [("lora", {"init": "pissa"}), ("lora", {"init": "olora"})]


def _size(folder: Path) -> tuple[int, int]:
    """(bytes of the safetensors weights, bytes of the whole folder)."""
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return weights, sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def measure(name: str, base_spec: ModelSpec, arch, knobs: dict | None = None) -> dict:
    """Apply one method with its defaults (plus ``knobs``), count, save, and measure the result."""
    spec = MethodSpec(name, KNOBS.get(name, {}) if knobs is None else knobs)
    method = methods.get(name)
    start = time.perf_counter()
    model, tok = models.load(methods.model_spec_for(base_spec, spec))
    model = method.apply(model, spec, Context(tokenizer=tok, total_steps=100))
    real, declared = methods.count_trainable(model), method.trainable(arch, spec)
    with tempfile.TemporaryDirectory() as tmp:
        methods.save_result(model, spec, tmp)
        weights, total = _size(Path(tmp))
    return {"name": name, "knobs": spec.knobs, "trainable": real, "declared": declared, "weights": weights,
            "folder": total, "seconds": time.perf_counter() - start, "format": method.fmt}


def table(rows: list[dict], base_params: int) -> str:
    out = ["| method | knobs beyond defaults | trainable params | % of base | declared = real | saved weights "
           "| result folder | format | apply + save |",
           "|---|---|---:|---:|:---:|---:|---:|---|---:|"]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['name']} | | | | | | | | skipped: {r['skipped']} |")
            continue
        knobs = ", ".join(f"{k}={v}" for k, v in r["knobs"].items()) or "-"
        out.append(f"| {r['name']} | {knobs} | {r['trainable']:,} | {100 * r['trainable'] / base_params:.4f}% | "
                   f"{'yes' if r['trainable'] == r['declared'] else 'NO (' + str(r['declared']) + ')'} | "
                   f"{_human(r['weights'])} | {_human(r['folder'])} | {r['format']} | {r['seconds']:.1f} s |")
    return "\n".join(out)


def _declared(arch) -> int:
    print(f"Base: SmolLM2-135M-Instruct, {arch.num_parameters:,} parameters; counts declared from its config.\n")
    print("| method | trainable params (declared) | % of base |\n|---|---:|---:|")
    for name in methods.names():
        spec = MethodSpec(name, KNOBS.get(name, {}))
        try:
            n = methods.get(name).trainable(arch, spec)
        except ConfigError as err:
            print(f"| {name} | {err} | |")
            continue
        print(f"| {name} | {n:,} | {100 * n / arch.num_parameters:.4f}% |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out")
    parser.add_argument("--only", default="", help="comma-separated rows to measure, in this order (lora+pissa "
                        "and lora+olora name the initialisation rows)")
    parser.add_argument("--declared", action="store_true",
                        help="only the counts declared from the config (meta-device copy): no weights load, seconds")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    base_spec = ModelSpec()
    arch = models.read_arch(base_spec)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.declared:
        return _declared(arch)
    plan = [(n, None) for n in methods.names()] + EXTRA_ROWS
    if args.only:
        named = {f"{n}+{k['init']}" if k else n: (n, k) for n, k in plan}
        plan = [named[r.strip()] for r in args.only.split(",") if r.strip()]
    rows = []
    for name, knobs in plan:
        if name in skip:
            rows.append({"name": name, "skipped": "--skip"})
            continue
        try:
            rows.append(measure(name, base_spec, arch, knobs))
        except ConfigError as err:
            rows.append({"name": name, "skipped": str(err)})
        print(table(rows[-1:], arch.num_parameters).splitlines()[-1], file=sys.stderr, flush=True)
    print(f"Base: SmolLM2-135M-Instruct, {arch.num_parameters:,} parameters (fp32 on CPU). "
          f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.\n")
    print(table(rows, arch.num_parameters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
