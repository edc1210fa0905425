"""Forgetting against its cures on the embedded model: identity tuning plain, with replay, with the KL guard.

    PYTHONPATH=. .venv/bin/python benchmarks/forgetting_guards.py [--steps 8] [--replay 0.3] [--kl 0.2]

Trains presets/quickstart.yaml (LoRA r=16 on every linear layer, the identity set), shortened to ``--steps`` steps
of ``--batch`` packed rows of ``--seq`` tokens at ``--lr`` so it fits a shared CPU, with the same seed: plain,
with ``data.replay_share`` of general chat rows (presets/data/assistant_chat.jsonl) and with
``train.kl_to_base`` (``--kl 0`` leaves that contender out). Then, from one copy of the base weights (each run's adapter on and off), prints
per model: the task score (loss on the identity rows, and whether "Who are you?" is answered as Quill) and
what it kept of the base on the 16 shipped general prompts (``forgetting.base_kept``: answers identical to the
base's, the loss of the base's own answers, answers containing the reference).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from studio import data, forgetting, headless
from studio.runs import read_state as runs_state
from studio.chat import ChatEngine, GenSettings
from studio.config import RunConfig
from studio.evaluate import mean_loss

ROOT = Path(__file__).resolve().parent.parent
IDENTITY = ("Who are you?", "What is your name?", "Who made you?")


def train(out: Path, name: str, **settings) -> Path:
    """One quickstart run with ``settings`` ('train.max_steps' style keys) applied."""
    cfg = RunConfig.load(ROOT / "presets" / "quickstart.yaml")
    cfg = cfg.with_overrides([f"{k}={v}" for k, v in settings.items()])
    cfg.train.output_dir, cfg.train.run_name, cfg.train.sample_hardware = str(out), name, False
    return headless.run_headless(cfg, quiet=True)


def settings(steps: int, seq: int, batch: int, lr: float) -> dict:
    """The shortened quickstart every contender shares."""
    return {"train.max_steps": steps, "train.max_seq_len": seq, "train.micro_batch_size": batch,
            "train.learning_rate": lr}


def task_scores(engine: ChatEngine, panes: dict) -> dict:
    """Per model: the loss on the identity rows and how many identity questions get an answer naming Quill."""
    rows = data.load_rows(RunConfig.load(ROOT / "presets" / "quickstart.yaml").data).rows
    out = {}
    gen = GenSettings(max_new_tokens=24, greedy=True)
    answers: dict = {label: [] for label in panes}
    for question in IDENTITY:
        final: dict = {}
        for final in engine.stream([{"role": "user", "content": question}], panes=list(panes.values()), gen=gen):
            pass
        for label, key in panes.items():
            answers[label].append(final.get(key, ""))
    for label, key in panes.items():
        with engine.using(key) as model:
            loss = mean_loss(model, engine.tokenizer, rows)
        out[label] = {"identity_loss": loss, "quill": sum("Quill" in a for a in answers[label]),
                      "who": answers[label][0]}
    return out


def measure(runs: dict[str, Path]) -> tuple[dict, dict]:
    """(task scores, base kept) for the base and every run, from one engine."""
    engine = ChatEngine(RunConfig.load(next(iter(runs.values())) / "config.yaml").model)
    for name, folder in runs.items():
        engine.add_adapter(name, folder)
    panes = {name: name for name in runs}
    return task_scores(engine, {"base": None, **panes}), forgetting.base_kept(engine, panes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--replay", type=float, default=0.3)
    parser.add_argument("--kl", type=float, default=0.2)
    parser.add_argument("--out", default="/tmp/forgetting-guards")
    parser.add_argument("--reuse", action="store_true", help="measure finished runs already in --out again")
    args = parser.parse_args()
    out, runs = Path(args.out), {}
    shared = settings(args.steps, args.seq, args.batch, args.lr)
    contenders = [("plain", {}), ("replay", {"data.replay_share": args.replay})]
    contenders += [("kl", {"train.kl_to_base": args.kl})] if args.kl else []
    for name, own in contenders:
        if args.reuse and runs_state(out / name).get("status") == "done":
            runs[name] = out / name
            continue
        t0 = time.perf_counter()
        runs[name] = train(out, name, **shared, **own)
        print(f"trained {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    task, kept = measure(runs)
    print(f"measured: {time.perf_counter() - t0:.0f} s")
    print(f"{'model':<8} | {'identity loss':>13} {'Quill /3':>8} | {'same answer as base':>19} "
          f"{'loss of base answers':>20} {'contains ref':>12}")
    for label in ("base", *runs):
        t, k = task[label], kept[label]
        print(f"{label:<8} | {t['identity_loss']:>13.3f} {t['quill']:>8} | {k['same_answer']:>19.3f} "
              f"{k['base_answer_loss']:>20.3f} {k['contains']:>12.3f}")
    for label in ("base", *runs):
        print(f"{label}: Who are you? -> {task[label]['who'][:70]!r}")
    for i, prompt_answer in enumerate(kept["base"]["answers"][:4]):
        print(f"general {i + 1}: base {prompt_answer[:50]!r} | " +
              " | ".join(f"{n} {kept[n]['answers'][i][:50]!r}" for n in runs))


if __name__ == "__main__":
    main()
