"""The GPU suite: the memory estimate against measured peaks, training throughput and MFU, and chat speed.

Made for one short run on a bare GPU machine that has torch, transformers, peft and accelerate (at its own
versions) and no network: what else the studio needs is installed from a folder of wheels carried beside
this script (see docs/benchmarks.md, "GPU suite", for the `pip download` line that prepares it).

    python benchmarks/gpu_suite.py --wheels benchmarks/wheels      # on the GPU machine (about 6-8 min)
    python benchmarks/gpu_suite.py --cpu                            # tiny shapes on the CPU (~70 s of CPU time)

It prints three tables:
  (a) memory: torch.cuda.max_memory_allocated of the second training step against
      memory.estimate(device="cuda").allocated_peak_bytes, for Qwen2.5-0.5B and Llama-3.2-1B shapes (random
      weights from their published configs) at 2,048 tokens: LoRA with checkpointing off and on, QLoRA NF4
      with and without double quantisation, and the chunked loss. On a CPU: tiny shapes, live tensor storage.
  (b) training: benchmarks/train_throughput.py on the Qwen2.5-0.5B shape (random weights, the embedded
      model's tokenizer): TRL, TRL + Liger, the studio and the studio with the chunked loss; bf16 LoRA and
      NF4 QLoRA, with MFU against the measured bf16 matmul peak.
  (c) chat: time to first token and tokens/s, one pane (the tuned adapter) and two (base and tuned in one
      batch), on the same shape.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# module -> distribution the studio and this suite need beyond torch/transformers/peft/accelerate
NEEDED = {"yaml": "PyYAML", "psutil": "psutil", "datasets": "datasets", "trl": "trl", "bitsandbytes": "bitsandbytes",
          "safetensors": "safetensors", "pynvml": "nvidia-ml-py"}
LIGER = "liger-kernel==0.8.5"  # TRL's use_liger_kernel; CUDA only (Triton kernels)
KEPT = ("torch", "transformers", "peft", "accelerate")  # the machine's own versions are never replaced

# published configs (hub config.json of Qwen/Qwen2.5-0.5B and meta-llama/Llama-3.2-1B), weights drawn at random
SHAPES = {
    "qwen2.5-0.5b": ("Qwen2Config", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                         max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                         tie_word_embeddings=True)),
    "llama-3.2-1b": ("LlamaConfig", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                         num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                         vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0,
                                         rms_norm_eps=1e-5, tie_word_embeddings=True)),
    "tiny-llama": ("LlamaConfig", dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=49152,
                                       max_position_embeddings=2048, tie_word_embeddings=True)),
}


def pins() -> dict[str, str]:
    """Exact pins from requirements.txt, by lower-case distribution name (the one home of versions)."""
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            out[line.split("==")[0].strip().lower()] = line
    return out


def install_missing(wheels: Path | None, liger: bool) -> list[str]:
    """Install what is missing from ``wheels`` (no index, no network), holding the machine's own torch,
    transformers, peft and accelerate where they are; returns the requirements installed."""
    pinned = pins()
    missing = [pinned.get(dist.lower(), dist) for mod, dist in NEEDED.items() if importlib.util.find_spec(mod) is None]
    if liger and importlib.util.find_spec("liger_kernel") is None:
        missing.append(LIGER)
    if not missing:
        return []
    if wheels is None:
        raise SystemExit(f"missing {', '.join(missing)}: give --wheels DIR (see docs/benchmarks.md)")
    held = Path(tempfile.mkdtemp()) / "held.txt"
    held.write_text("".join(f"{d}=={md.version(d)}\n" for d in KEPT if _installed(d)))
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "-c", str(held), *missing]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"installing from {wheels} failed: {out.stderr.strip().splitlines()[-1:]}")
    return missing


def _installed(dist: str) -> bool:
    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


def build_config(shape: str):
    import transformers

    kind, values = SHAPES[shape]
    return getattr(transformers, kind)(**values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheels", type=Path, help="folder of wheels for what the machine lacks")
    p.add_argument("--cpu", action="store_true", help="tiny shapes on the CPU (the path CI can run)")
    p.add_argument("--parts", default="memory,train,chat", help="which tables, comma separated")
    args = p.parse_args(argv)
    started = time.time()
    installed = install_missing(args.wheels, liger=not args.cpu)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path[:0] = [str(ROOT), str(HERE)]
    import gpu_suite_parts as parts  # after the install: it imports the studio (yaml, datasets, ...)

    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    print(f"# GPU suite on {parts.machine(cuda)}; installed from wheels: {', '.join(installed) or 'nothing'}")
    wanted = [w.strip() for w in args.parts.split(",")]
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        work = Path(tmp)
        if "memory" in wanted:
            parts.memory_table(cuda, build_config)
        model_dir = parts.random_model_dir(build_config("qwen2.5-0.5b" if cuda else "tiny-llama"), work / "model", cuda)
        if "train" in wanted:
            parts.train_table(cuda, model_dir, work)
        if "chat" in wanted:
            parts.chat_table(cuda, model_dir, work)
    print(f"# suite wall time {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
