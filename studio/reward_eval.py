"""Held-out reward: a model's greedy answers to prompt rows, scored by a run's ``train.rewards``.

What the GRPO demo compares before and after training (``benchmarks/grpo_demo.py``, its slow test), and what
anyone can ask of a finished GRPO run: the same rewards, on prompts it never trained on, without sampling.

    rows, _ = prompts.load(spec, needs, path="presets/data/arithmetic-heldout.jsonl")
    answers = greedy_answers(model, tokenizer, rows, max_new_tokens=8)
    means = mean_rewards(rows, answers, cfg.train.rewards, tokenizer)   # {'match': 0.4, ..., 'total': 0.9}
"""

from __future__ import annotations

import time

import torch

from studio import models, rewards, runs
from studio.config import RunConfig
from studio.data import chat_template, prompts
from studio.training import TrainingJob

__all__ = ["greedy_answers", "scores", "mean_rewards", "before_after"]


def greedy_answers(model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Each row's answer by greedy decoding (deterministic), at most ``max_new_tokens`` tokens."""
    template = chat_template(tokenizer)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues at the right edge
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = []
    try:
        model.eval()
        for start in range(0, len(rows), batch_size):
            texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, chat_template=template,
                                                   add_generation_prompt=True) for r in rows[start:start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def scores(rows: list[dict], answers: list[str], items: list[dict], tokenizer) -> list[dict]:
    """Per answer: every reward's score by name and the weighted ``total``."""
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    columns = {k: [r.get(k) for r in rows] for k in rewards.columns_read(items)}
    names, weights = rewards.names(items), rewards.weights(items)
    per = [f(prompts=[r["prompt"] for r in rows], completions=answers, **columns)
           for f in rewards.scorers(items, count)]
    return [{**{n: per[j][i] for j, n in enumerate(names)},
             "total": sum(w * per[j][i] for j, w in enumerate(weights))} for i in range(len(rows))]


def mean_rewards(rows: list[dict], answers: list[str], items: list[dict], tokenizer) -> dict:
    """The mean of every reward and of the weighted total over ``rows``."""
    table = scores(rows, answers, items, tokenizer)
    return {k: sum(s[k] for s in table) / max(1, len(table)) for k in (table[0] if table else {})}


def before_after(cfg: RunConfig, heldout: str) -> dict:
    """Train ``cfg`` (a GRPO run) and score the base and the tuned model's greedy answers on ``heldout``.

    Returns:
        {'base': means, 'tuned': means, 'answers': [(question, base answer, tuned answer)], 'seconds': training
        time, 'steps', 'run_dir', 'sampled_first' / 'sampled_last': the mean total reward of the sampled training
        answers over the first and the last 5 steps}; means as ``mean_rewards`` gives them.

    Raises:
        RuntimeError: the run did not finish (its one-line message).
    """
    items = cfg.train.rewards
    rows, _ = prompts.load(cfg.data, rewards.columns_read(items), path=heldout)
    tokens = int(cfg.train.objective.knobs.get("max_completion_length", 64))
    base, tok = models.load(cfg.model)
    before = greedy_answers(base, tok, rows, tokens)
    del base
    job = TrainingJob(cfg)
    t0 = time.perf_counter()
    job.start()
    job.wait()
    seconds = time.perf_counter() - t0
    if job.state.value != "done":
        raise RuntimeError(f"training ended {job.state.value}: {job.snapshot()['message']}")
    after = greedy_answers(job.model, job.tokenizer, rows, tokens)
    curve = [r["reward"] for r in runs.read_metrics(job.run_dir) if r.get("reward") is not None]
    return {"base": mean_rewards(rows, before, items, tok), "tuned": mean_rewards(rows, after, items, tok),
            "sampled_first": sum(curve[:5]) / max(1, len(curve[:5])), "sampled_last": sum(curve[-5:]) / max(1, len(curve[-5:])),
            "answers": [(r["prompt"][-1]["content"], b, a) for r, b, a in zip(rows, before, after)],
            "seconds": seconds, "steps": cfg.train.max_steps, "run_dir": str(job.run_dir)}
