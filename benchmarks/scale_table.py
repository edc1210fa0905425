"""What the VRAM estimator predicts per GPU for a 70B LoRA and QLoRA under each multi-GPU strategy.

Prints a Markdown table (pasted into docs/scale.md). Pure arithmetic from the built-in Llama-2-70B
architecture: no download, no GPU, well under a second.

    PYTHONPATH=. python benchmarks/scale_table.py              # 8 GPUs (one node)
    PYTHONPATH=. python benchmarks/scale_table.py --gpus 16    # two nodes of eight
"""

from __future__ import annotations

import argparse

from studio import known_models, memory
from studio.config import RunConfig

# (label, strategy, offload); "1 GPU" is the single-process baseline the others are held against
STRATEGIES = [
    ("1 GPU (no launcher)", "none", False),
    ("DDP", "ddp", False),
    ("DeepSpeed ZeRO-2", "deepspeed-zero2", False),
    ("DeepSpeed ZeRO-2 + offload", "deepspeed-zero2", True),
    ("FSDP (full shard)", "fsdp", False),
    ("FSDP + CPU offload", "fsdp", True),
    ("DeepSpeed ZeRO-3", "deepspeed-zero3", False),
    ("DeepSpeed ZeRO-3 + offload", "deepspeed-zero3", True),
]

# One run description for both methods; only the method (and thus the base's storage) changes.
COMMON = [
    "model.id=meta-llama/Llama-2-70b-hf", "model.dtype=bf16",
    "method.r=16", "method.alpha=32", "method.targets=[all-linear]",
    "train.micro_batch_size=1", "train.grad_accum=8", "train.max_seq_len=2048",
    "train.gradient_checkpointing=true", "train.optimizer=adamw", "train.precision=bf16",
]
METHODS = [("LoRA (bf16 base)", "lora"), ("QLoRA (NF4 base)", "qlora")]


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f}"


def rows(gpus: int) -> list[list[str]]:
    """One row per (method, strategy): peak per GPU and its largest parts, in GB."""
    _, arch = known_models.lookup("meta-llama/Llama-2-70b-hf")
    out = []
    for method_label, method in METHODS:
        for label, strategy, offload in STRATEGIES:
            cfg = RunConfig().with_overrides([*COMMON, f"method.name={method}",
                                              f"train.distributed.strategy={strategy}",
                                              f"train.distributed.offload={str(offload).lower()}"])
            world = 1 if strategy == "none" else gpus
            bd = memory.estimate(arch, cfg, world_size=world, device="cuda")
            out.append([method_label, label, str(world), _gb(bd.weights + bd.quant_constants + bd.upcast_fp32),
                        _gb(bd.gradients), _gb(bd.optimizer), _gb(bd.activations + bd.logits),
                        _gb(bd.peak_bytes)])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the run is spread over")
    args = parser.parse_args(argv)
    head = ["method", "strategy", "GPUs", "weights", "grads", "optimizer", "activations+logits", "peak / GPU (GB)"]
    print(f"Llama-2-70B, r=16 all-linear, micro-batch 1 x 2048 tokens, checkpointing on, AdamW; "
          f"estimate per GPU over {args.gpus} GPUs (GB = 10^9 bytes)\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows(args.gpus):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
