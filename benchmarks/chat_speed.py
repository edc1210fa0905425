"""Side-by-side chat: memory and speed of one pane vs two panes from one copy of the weights.

    PYTHONPATH=. .venv/bin/python benchmarks/chat_speed.py [--tokens 64] [--repeats 3]

Each scenario runs in its own process so resident memory (RSS) is not mixed between them:
  one      ChatEngine + a LoRA adapter, the tuned pane alone
  two      the same engine, base and tuned panes in ONE generate call (mixed batch)
  copies   the baseline without shared weights: a second model copy for the tuned answer,
           base and tuned generated one after the other
The embedded SmolLM2-135M-Instruct is the model; the LoRA adapter (r=8, attention) gets small random
weights (no training is needed to measure speed and memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT = "Who are you?"
LONG = "Write a short story about a robot who learns to paint."


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kb = lambda k: int(fields[k].strip().split()[0]) / 1024  # noqa: E731
    return kb("VmRSS"), kb("VmHWM")


def make_adapter_run(root: Path) -> Path:
    """A run folder with a LoRA adapter on the embedded model (random small B, so it changes answers)."""
    import torch

    from studio import methods, models
    from studio.config import MethodSpec, ModelSpec, RunConfig

    spec = MethodSpec("lora", {"r": 8, "targets": ["attention"]})
    cfg = RunConfig(model=ModelSpec(), method=spec)
    model, _ = models.load(cfg.model)
    model = methods.get("lora").apply(model, spec, methods.Context())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    run = root / "bench-lora"
    methods.save_result(model, spec, run / "adapter")
    cfg.save(run / "config.yaml")
    return run


def _engine(run: Path):
    from studio import models
    from studio.chat import ChatEngine
    from studio.config import ModelSpec

    engine = ChatEngine(ModelSpec())
    engine.add_adapter("tuned", run)
    models.forget_cache()  # measure the engine's own copy, not the loader's cache
    return engine


def _timed_stream(engine, panes, prompt, tokens):
    from studio.chat import GenSettings

    gen = GenSettings(max_new_tokens=tokens, greedy=True)
    start = time.perf_counter()
    first = None
    for texts in engine.stream([{"role": "user", "content": prompt}], panes=panes, gen=gen):
        if first is None and any(texts.values()):
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    n = sum(len(t) for t in engine.last_tokens.values())
    return first, total, n


def scenario_engine(run: Path, panes: list, tokens: int, repeats: int) -> dict:
    engine = _engine(run)
    _timed_stream(engine, panes, SHORT, 4)  # warm-up
    ttft = [t for t in (_timed_stream(engine, panes, SHORT, 8)[0] for _ in range(repeats)) if t is not None]
    speed = []
    for _ in range(repeats):
        _, total, n = _timed_stream(engine, panes, LONG, tokens)
        speed.append(n / total)
    cur, peak = rss_mb()
    return {"ttft_s": statistics.median(ttft), "tokens_per_s": statistics.median(speed), "rss_mb": cur,
            "peak_rss_mb": peak}


def scenario_copies(run: Path, tokens: int, repeats: int) -> dict:
    """Baseline: the tuned model as a separate copy; base and tuned answer one after the other."""
    import torch

    from studio import methods, models
    from studio.config import ModelSpec

    base, tok = models.load(ModelSpec())
    tuned = methods.load_result(models.load(ModelSpec())[0], run / "adapter").eval()
    models.forget_cache()
    ids = tok.apply_chat_template([{"role": "user", "content": LONG}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    speed = []
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for model in (base, tuned):
            with torch.no_grad():
                out = model.generate(**ids, max_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            n += out.shape[1] - ids["input_ids"].shape[1]
        speed.append(n / (time.perf_counter() - start))
    cur, peak = rss_mb()
    return {"ttft_s": None, "tokens_per_s": statistics.median(speed), "rss_mb": cur, "peak_rss_mb": peak}


def _child(args) -> None:
    run = Path(args.run)
    if args.scenario == "one":
        out = scenario_engine(run, ["tuned"], args.tokens, args.repeats)
    elif args.scenario == "two":
        out = scenario_engine(run, [None, "tuned"], args.tokens, args.repeats)
    else:
        out = scenario_copies(run, args.tokens, args.repeats)
    print(json.dumps(out))


def _run_child(scenario: str, run: Path, tokens: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--scenario", scenario, "--run", str(run), "--tokens", str(tokens),
           "--repeats", str(repeats)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64, help="new tokens per answer for tokens/s")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scenario", choices=("one", "two", "copies"), help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.scenario:
        return _child(args)
    import torch

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        run = make_adapter_run(Path(tmp))
        res = {s: _run_child(s, run, args.tokens, args.repeats) for s in ("one", "two", "copies")}
    load_after = os.getloadavg()
    one, two, copies = res["one"], res["two"], res["copies"]
    print(f"machine: {_cpu()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(f"{'':28}{'one pane':>12}{'two panes, 1 batch':>20}{'two copies (baseline)':>24}")
    print(f"{'RSS after answering, MiB':28}{one['rss_mb']:>12.0f}{two['rss_mb']:>20.0f}{copies['rss_mb']:>24.0f}")
    print(f"{'peak RSS, MiB':28}{one['peak_rss_mb']:>12.0f}{two['peak_rss_mb']:>20.0f}{copies['peak_rss_mb']:>24.0f}")
    print(f"{'time to first token, s':28}{one['ttft_s']:>12.3f}{two['ttft_s']:>20.3f}{'-':>24}")
    print(f"{'tokens/s (all panes)':28}{one['tokens_per_s']:>12.1f}{two['tokens_per_s']:>20.1f}"
          f"{copies['tokens_per_s']:>24.1f}")
    print(f"two panes / one pane RSS: {two['rss_mb'] / one['rss_mb']:.3f}x (target < 1.1x); "
          f"two copies / one pane: {copies['rss_mb'] / one['rss_mb']:.3f}x")
    print(json.dumps({"load": [load_before[0], load_after[0]], **res}))


if __name__ == "__main__":
    main()
