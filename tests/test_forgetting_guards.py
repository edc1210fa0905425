"""Replay against forgetting on the embedded model (slow): identity tuning with a share of general chat rows
keeps more of the base's answers to general prompts than the same tuning without, at a similar task score.
docs/benchmarks.md records the numbers of benchmarks/forgetting_guards.py, which runs the same comparison
with the KL guard as a third contender."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from studio import data, forgetting, headless
from studio.chat import ChatEngine
from studio.config import RunConfig
from studio.evaluate import mean_loss
from tests.runfolders import make_run

ROOT = Path(__file__).resolve().parent.parent
# the shortened quickstart benchmarks/forgetting_guards.py uses for docs/benchmarks.md: 8 steps of 2 packed
# rows of 64 tokens at 5e-3
STEPS, SEQ, BATCH, LR = 8, 64, 2, 5e-3


def _train(out: Path, name: str, replay: float) -> Path:
    cfg = RunConfig.load(ROOT / "presets" / "quickstart.yaml")
    cfg.train.max_steps, cfg.train.output_dir, cfg.train.run_name = STEPS, str(out), name
    cfg.train.max_seq_len, cfg.train.micro_batch_size, cfg.train.learning_rate = SEQ, BATCH, LR
    cfg.train.sample_hardware, cfg.data.replay_share = False, replay
    return headless.run_headless(cfg, quiet=True)


def test_base_kept_compares_each_pane_with_the_base_answers(tiny_dirs, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello there", "reference": "hi"}\n{"prompt": "count to three", "reference": "3"}')
    run = make_run(tmp_path / "runs", tiny_dirs["llama"], "moved", "lora", {"r": 4}, scale=0.5)
    engine = ChatEngine(RunConfig.load(run / "config.yaml").model)
    engine.add_adapter("moved", run)
    kept = forgetting.base_kept(engine, {"moved": "moved"}, prompts, max_new_tokens=6)
    assert kept["base"]["same_answer"] == 1.0 and len(kept["moved"]["answers"]) == 2
    # the base's greedy answers are its own likeliest tokens; a far-moved adapter finds them much less likely
    assert kept["base"]["base_answer_loss"] < kept["moved"]["base_answer_loss"]
    assert kept["moved"]["same_answer"] < 1.0


@pytest.mark.slow
def test_replay_keeps_more_of_the_base_at_a_similar_task_score(tmp_path):
    started = time.perf_counter()
    runs = {"plain": _train(tmp_path, "plain", 0.0), "replay": _train(tmp_path, "replay", 0.3)}
    engine = ChatEngine(RunConfig.load(runs["plain"] / "config.yaml").model)
    for name, folder in runs.items():
        engine.add_adapter(name, folder)
    kept = forgetting.base_kept(engine, {name: name for name in runs})
    identity = data.load_rows(RunConfig.load(ROOT / "presets" / "quickstart.yaml").data).rows
    task = {}
    for name in runs:
        with engine.using(name) as model:
            task[name] = mean_loss(model, engine.tokenizer, identity)
    with engine.using(None) as model:
        task["base"] = mean_loss(model, engine.tokenizer, identity)
    print(f"{time.perf_counter() - started:.0f} s; identity loss {task}; "
          + "; ".join(f"{k}: same {v['same_answer']:.3f}, base-answer loss {v['base_answer_loss']:.3f}"
                      for k, v in kept.items()))
    assert kept["base"]["same_answer"] == 1.0  # greedy: the base repeats itself
    # both learnt the task about as well: far below the base's identity loss, and close to each other
    assert task["plain"] < 0.5 * task["base"] and task["replay"] < 0.5 * task["base"]
    assert task["replay"] < task["plain"] + 0.5
    # replay kept more of the base: its own answers are likelier under it, and more of them are repeated
    assert kept["replay"]["base_answer_loss"] < kept["plain"]["base_answer_loss"]
    assert kept["replay"]["same_answer"] >= kept["plain"]["same_answer"]
    assert kept["replay"]["contains"] > kept["plain"]["contains"]  # and more general questions answered right
