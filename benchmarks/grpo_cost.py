"""What GRPO costs in GPU memory against SFT and DPO, by the studio's estimate, and the knob to lower.

Pure arithmetic from the built-in Llama-3-8B and Qwen2.5-1.5B architectures (LoRA r=16 on all linear layers,
bf16, gradient checkpointing, 256 prompt tokens): no download, no GPU, under a second. SFT and DPO train on
rows of prompt + a 256-token answer (DPO: chosen and rejected); GRPO writes its answers first (the KV cache of
micro-batch x accumulation answers at once), then trains on prompt + answer.

    PYTHONPATH=. python benchmarks/grpo_cost.py
"""

from __future__ import annotations

from studio import hardware, known_models, memory, validation
from studio import fit as advisor
from studio.config import RunConfig

COMMON = ["method.name=lora", "method.r=16", "method.alpha=32", "method.targets=[all-linear]", "model.dtype=bf16",
          "train.gradient_checkpointing=true", "train.precision=bf16", "train.grad_accum=1"]
REWARD = ['train.rewards=[{kind: format, pattern: "x"}]']
ROWS = [  # (label, overrides); SFT / DPO rows carry prompt + answer in max_seq_len
    ("SFT, 8 rows of 512 tokens", ["train.micro_batch_size=8", "train.max_seq_len=512"]),
    ("DPO, 8 pairs of 512 tokens", ["train.micro_batch_size=8", "train.max_seq_len=512", "train.objective=dpo"]),
    ("GRPO, 2 prompts x 4 answers of 256", ["train.micro_batch_size=8", "train.max_seq_len=256",
                                            "train.objective=grpo", "train.objective.num_generations=4",
                                            "train.objective.max_completion_length=256", *REWARD]),
    ("GRPO, 1 prompt x 8 answers of 1024", ["train.micro_batch_size=8", "train.max_seq_len=256",
                                            "train.objective=grpo", "train.objective.num_generations=8",
                                            "train.objective.max_completion_length=1024", *REWARD]),
    ("GRPO, 2 prompts x 16 answers of 1024", ["train.micro_batch_size=32", "train.max_seq_len=256",
                                              "train.objective=grpo", "train.objective.num_generations=16",
                                              "train.objective.max_completion_length=1024", *REWARD]),
]


def main() -> None:
    for model_id, gpu in (("meta-llama/Meta-Llama-3-8B", "RTX 4090"), ("Qwen/Qwen2.5-1.5B", "RTX 4090")):
        _, arch = known_models.lookup(model_id)
        device = hardware.find(gpu)
        print(f"\n{model_id}, LoRA r=16 all-linear, bf16, checkpointing; fit on {device.name}")
        print("| run | peak GB | generation KV GB | activations GB | verdict | first change offered |")
        print("|---|---:|---:|---:|---|---|")
        for label, extra in ROWS:
            cfg = validation.with_overrides(RunConfig(), [f"model.id={model_id}", *COMMON, *extra])
            bd = memory.estimate(arch, cfg, device="cuda")
            fit = advisor.fit(bd, device, arch, cfg)
            change = fit.changes[0].text if fit.changes else ""
            print(f"| {label} | {bd.peak_bytes / 1e9:.1f} | {bd.generation_kv / 1e9:.2f} | "
                  f"{bd.activations / 1e9:.2f} | {fit.verdict} | {change} |")


if __name__ == "__main__":
    main()
