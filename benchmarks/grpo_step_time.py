"""What a GRPO step costs in time against SFT and DPO steps: the same model, method and answer length, one run.

The embedded SmolLM2-135M-Instruct with LoRA r=16 on all linear layers; every objective trains on the same
prompts (how to add two numbers, from presets/data/arithmetic.jsonl) with answers of about ``--answer``
tokens: SFT on 8 rows of prompt + a written answer, DPO on 8 pairs (a written answer of that length chosen,
another rejected), GRPO on 2 prompts x 4 answers it writes itself, at most ``--answer`` tokens each (a
``length`` reward, so nothing stops the answers early on purpose). Prints seconds per step (median of the
steps after the first) and the tokens each step trained on, side by side.

    PYTHONPATH=. python benchmarks/grpo_step_time.py [--steps 4] [--answer 32] [--model small]

``--model small`` swaps in a random Llama of realistic proportions (4 blocks, hidden 256, GQA 8/2 heads) with
the embedded model's tokenizer, for a machine too busy to time the 135M model in minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import headless, runs, validation  # noqa: E402

_ANSWER = ("To add {a} and {b}, start from {a} and count on {b} more: the sum is {s}. "
           "You can check it by counting back {b} from {s}, which gives {a} again.")
_WORSE = "Adding numbers is something I cannot help with, sorry. Please ask a calculator or a teacher instead."


def _prompts(n: int) -> list[tuple[str, int, int]]:
    rows = [json.loads(line) for line in (ROOT / "presets" / "data" / "arithmetic.jsonl").read_text().splitlines()]
    out = []
    for row in rows[:n]:
        a, b = (int(x) for x in row["prompt"].split("What is ")[1].split("?")[0].split(" + "))
        out.append((f"Explain how to add {a} and {b}.", a, b))
    return out


def _data(folder: Path, n: int) -> dict[str, Path]:
    """One file per objective over the same prompts: chat rows, preference pairs, prompt rows."""
    files = {k: folder / f"{k}.jsonl" for k in ("sft", "dpo", "grpo")}
    rows = {k: [] for k in files}
    for prompt, a, b in _prompts(n):
        answer = _ANSWER.format(a=a, b=b, s=a + b)
        rows["sft"].append({"messages": [{"role": "user", "content": prompt},
                                         {"role": "assistant", "content": answer}]})
        rows["dpo"].append({"prompt": prompt, "chosen": answer, "rejected": _WORSE})
        rows["grpo"].append({"prompt": prompt, "answer": str(a + b)})
    for k, path in files.items():
        path.write_text("\n".join(json.dumps(r) for r in rows[k]) + "\n")
    return files


def _small_model(folder: Path) -> str:
    """A random Llama (4 blocks, hidden 256) with the embedded tokenizer, saved as a local folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from studio.models import embedded_dir

    tok = AutoTokenizer.from_pretrained(embedded_dir())
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                                 num_key_value_heads=2, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _cfg(objective: str, data: Path, out: Path, steps: int, answer: int, model: str = "embedded"):
    train = {"max_steps": steps, "logging_steps": 1, "save_steps": 1000, "micro_batch_size": 8, "grad_accum": 1,
             "max_seq_len": 128, "learning_rate": 5e-4, "warmup_ratio": 0.0, "seed": 42, "run_name": objective,
             "output_dir": str(out), "sample_hardware": False, "objective": {"name": objective}}
    if objective == "grpo":  # 8 answers a step: 2 prompts x 4; the reward only has to exist, not to teach
        train["objective"] = {"name": "grpo", "num_generations": 4, "max_completion_length": answer,
                              "temperature": 1.0}
        train["rewards"] = [{"kind": "length", "min_tokens": 1, "max_tokens": answer}]
    return validation.from_dict({"model": {"id": model},
                                 "method": {"name": "lora", "r": 16, "alpha": 32, "targets": ["all-linear"]},
                                 "data": {"path": str(data)}, "train": train})


def measure(objective: str, data: Path, out: Path, steps: int, answer: int, model: str = "embedded") -> dict:
    """Seconds per step (median after the first) and trained tokens per step of one short run."""
    run_dir = headless.run_headless(_cfg(objective, data, out, steps, answer, model), quiet=True)
    rows = [r for r in runs.read_metrics(run_dir) if "loss" in r and "time" in r]
    gaps = [b["time"] - a["time"] for a, b in zip(rows, rows[1:])]
    tokens = [b["tokens"] - a["tokens"] for a, b in zip(rows, rows[1:])]
    return {"seconds": statistics.median(gaps), "tokens": statistics.median(tokens), "steps": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps per objective (the first is not timed)")
    parser.add_argument("--answer", type=int, default=32, help="answer tokens (GRPO: at most)")
    parser.add_argument("--model", choices=("embedded", "small"), default="embedded",
                        help="the embedded SmolLM2-135M, or a small random Llama with its tokenizer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grpo-time-") as tmp:
        files = _data(Path(tmp), 24)
        model = _small_model(Path(tmp) / "small") if args.model == "small" else "embedded"
        got = {}
        for k in ("sft", "dpo", "grpo"):
            got[k] = measure(k, files[k], Path(tmp) / "runs", args.steps, args.answer, model)
            print(f"{k}: {got[k]}", file=sys.stderr, flush=True)
    base = got["sft"]["seconds"]
    name = "SmolLM2-135M" if args.model == "embedded" else "random Llama 4x256 (49k vocabulary)"
    print(f"{name}, LoRA r=16 all-linear, 8 sequences a step, answers of ~{args.answer} tokens, "
          f"median of steps 2-{args.steps}")
    print("| objective | s / step | x SFT | tokens trained / step | ms / token |")
    print("|---|---:|---:|---:|---:|")
    for k, g in got.items():
        print(f"| {k} | {g['seconds']:.2f} | {g['seconds'] / base:.1f} | {g['tokens']:.0f} | "
              f"{1000 * g['seconds'] / max(g['tokens'], 1):.1f} |")


if __name__ == "__main__":
    main()
