"""GRPO on tiny models: a run trains through TRL's GRPOTrainer with the studio's rewards, logs each reward's
mean, the total and the sampled answers, saves a result that loads back with identical logits, refuses bad
reward settings in one line each before anything loads, and a stopped run resumes on its curve."""

from __future__ import annotations

import json

import pytest
import torch

from studio import fit, grpo_train, hardware, memory, methods, models, objectives, runs, validation
from studio.config import ConfigError, ModelSpec, RunConfig
from studio.data import DataError, prompts
from tests.test_training import At, run_job

REWARDS = [{"kind": "match", "column": "answer", "extract": r"(\d+)", "mode": "number", "weight": 1.0},
           {"kind": "length", "min_tokens": 1, "max_tokens": 4, "weight": 0.5},
           {"kind": "excludes", "words": ["zzz"], "weight": 0.2}]


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(8)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def grpo_cfg(tiny_dirs, data_path, tmp_path, rewards=None, objective=None, method=None, **train) -> RunConfig:
    base = {"max_steps": 4, "micro_batch_size": 4, "learning_rate": 5e-2, "output_dir": str(tmp_path / "runs"),
            "precision": "fp32", "max_seq_len": 64, "save_steps": 2, "run_name": "grpo",
            "objective": objective or {"name": "grpo", "num_generations": 4, "max_completion_length": 6},
            "rewards": REWARDS if rewards is None else rewards}
    return validation.from_dict({"model": {"id": str(tiny_dirs["llama"])},
                                 "method": method or {"name": "lora", "r": 4, "targets": ["all-linear"]},
                                 "data": {"path": str(data_path)}, "train": {**base, **train}})


def test_grpo_trains_logs_each_reward_and_the_result_loads_back(tiny_dirs, prompt_file, tmp_path):
    job = run_job(grpo_cfg(tiny_dirs, prompt_file, tmp_path))
    assert job.state == "done", job.snapshot()["message"]
    rows = [r for r in runs.read_metrics(job.run_dir) if "loss" in r]
    assert len(rows) == 4
    for row in rows:  # every reward's mean, the weighted total, each within its kind's range
        assert 0 <= row["reward_match"] <= 1 and -1 <= row["reward_length"] <= 0 and row["reward_excludes"] == 1
        total = row["reward_match"] + 0.5 * row["reward_length"] + 0.2 * row["reward_excludes"]
        assert row["reward"] == pytest.approx(total, abs=1e-5)
        assert row["tokens_per_second"] > 0  # prompt and answer tokens of each step
    assert rows[-1]["tokens"] > rows[0]["tokens"] > 0
    samples = [json.loads(line) for line in (job.run_dir / grpo_train.SAMPLES_FILE).read_text().splitlines()]
    assert [s["step"] for s in samples] == [1, 2, 3, 4]
    last = samples[-1]["rows"]
    assert len(last) == 4 and {"prompt", "answer", "match", "length", "excludes", "total"} <= set(last[0])
    assert last[0]["prompt"].startswith("What is")
    assert any(e["type"] == "samples" for e in job.events())
    ids = torch.tensor([[10, 20, 30, 40, 50]])
    base, _ = models.load(ModelSpec(id=str(tiny_dirs["llama"])))
    loaded = methods.load_result(base, job.run_dir / "adapter")
    with torch.no_grad():
        assert torch.equal(job.model.eval()(input_ids=ids).logits, loaded(input_ids=ids).logits)


@pytest.mark.parametrize("rewards, line", [
    ([{"kind": "format", "pattern": "(<answer>"}], "train.rewards[0].pattern: '(<answer>' is not a valid regex"),
    ([{"kind": "match", "extract": "[0-9"}], "train.rewards[0].extract: '[0-9' is not a valid regex"),
    ([{"kind": "format", "pattern": "x", "weight": 0}, {"kind": "contains", "words": ["a"], "weight": 0.0}],
     "train.rewards: every weight is 0, so nothing is rewarded"),
    ([], "train.rewards: GRPO needs at least one reward"),
    ([{"kind": "smile"}], "train.rewards[0].kind: 'smile' is not one of"),
    ([{"kind": "length", "min_tokens": 9, "max_tokens": 3}], "train.rewards[0]: min_tokens 9 is above max_tokens 3"),
    ([{"kind": "contains", "words": []}], "train.rewards[0].words: list at least one word"),
    ([{"kind": "model", "path": "/nowhere"}], "train.rewards[0].path: '/nowhere' is no folder with a model"),
    ([{"kind": "format", "pattern": "x", "colour": 1}], "train.rewards[0].colour: unknown setting"),
])
def test_bad_reward_settings_are_refused_in_one_line_each(tiny_dirs, prompt_file, tmp_path, rewards, line):
    with pytest.raises(ConfigError) as err:
        grpo_cfg(tiny_dirs, prompt_file, tmp_path, rewards=rewards)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(line), err.value.problems


def test_batch_and_kl_clashes_are_refused(tiny_dirs, prompt_file, tmp_path):
    with pytest.raises(ConfigError, match=r"must be a multiple of train.objective.num_generations \(4\)"):
        grpo_cfg(tiny_dirs, prompt_file, tmp_path, micro_batch_size=3)
    with pytest.raises(ConfigError, match="a KL reference needs a PEFT method"):
        grpo_cfg(tiny_dirs, prompt_file, tmp_path, method={"name": "full"},
                 objective={"name": "grpo", "num_generations": 4, "beta": 0.01})


def test_a_column_the_data_lacks_is_one_line_before_the_model_loads(tiny_dirs, prompt_file, tmp_path):
    cfg = grpo_cfg(tiny_dirs, prompt_file, tmp_path, rewards=[{"kind": "match", "column": "solution"}])
    tok = models.load_tokenizer(cfg.model)
    with pytest.raises(DataError, match="read the column 'solution', which the data lacks"):
        grpo_train.build_data(cfg, tok, objectives.get("grpo"))
    job = run_job(cfg)
    assert job.state == "failed" and "solution" in job.snapshot()["message"] and job.model is None


def test_prompt_rows_detect_map_skip_and_preview(tiny_dirs, tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"messages": [{"role": "user", "content": "Hi?"}], "answer": "1"},
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "answer": "2"},
            {"messages": [{"role": "user", "content": "no answer"}]},
            {"messages": [{"role": "user", "content": "long " * 200}], "answer": "3"},
            {"messages": "", "answer": "4"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "data": {"path": str(path)},
                               "train": {"max_seq_len": 64}})
    tok = models.load_tokenizer(cfg.model)
    built = prompts.build(cfg, tok, needs=["answer"])
    assert len(built.train) == 1 and built.train[0]["answer"] == "1"
    assert built.train[0]["prompt"] == [{"role": "user", "content": "Hi?"}]
    assert built.stats.skipped == 4
    reasons = " | ".join(built.stats.skipped_examples)
    assert "ends with a assistant turn" in reasons and "answer is missing" in reasons
    assert "over train.max_seq_len=64" in reasons and "is empty" in reasons
    mapped = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "data": {
        "path": str(path), "columns": {"prompt": "messages"}, "system_prompt": "Be brief."}})
    fmt, shown = prompts.preview(mapped, tok, n=1, needs=["answer"])
    assert fmt == "prompts" and "Be brief." in shown[0][0] and "Hi?" in shown[0][0] and shown[0][1] == "1"


def test_the_estimate_counts_generation_and_the_verdict_names_the_knob(tiny_dirs, prompt_file, tmp_path):
    small = grpo_cfg(tiny_dirs, prompt_file, tmp_path)
    arch, _ = memory.resolve_arch(small.model)
    big = RunConfig.from_dict(small.to_dict())
    big.train.objective.knobs.update(num_generations=16, max_completion_length=2048)
    big.train.micro_batch_size = 16
    a, b = memory.estimate(arch, small), memory.estimate(arch, big)
    assert a.generation_kv > 0 and b.generation_kv > 8 * a.generation_kv
    # 2 x layers x kv dim x bytes x answers x (prompt + answer tokens)
    per_token = 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * 2
    assert b.generation_kv >= per_token * 16 * (64 + 2048)
    device = hardware.Device("tiny", int(b.peak_bytes * 0.7))
    verdict = fit.fit(b, device, arch, big)
    texts = " | ".join(c.text for c in verdict.changes)
    assert verdict.verdict == "does not fit" and ("answers per prompt" in texts or "answers of at most" in texts)


def test_stopped_grpo_run_resumes_on_its_curve(tiny_dirs, prompt_file, tmp_path):
    cfg = grpo_cfg(tiny_dirs, prompt_file, tmp_path, max_steps=4, save_steps=10)
    first = run_job(cfg, At(3, lambda job: job.stop()))
    assert first.state == "stopped"
    assert runs.last_checkpoint(first.run_dir).name == "checkpoint-3"
    again = run_job(None, resume_dir=first.run_dir)
    assert again.state == "done", again.snapshot()["message"]
    resumed = [(r["step"], r["reward"]) for r in runs.read_metrics(again.run_dir) if "reward" in r]
    whole = run_job(grpo_cfg(tiny_dirs, prompt_file, tmp_path, max_steps=4, save_steps=10, run_name="whole"))
    straight = [(r["step"], r["reward"]) for r in runs.read_metrics(whole.run_dir) if "reward" in r]
    assert [s for s, _ in resumed] == [1, 2, 3, 4]
    assert [r for _, r in resumed] == pytest.approx([r for _, r in straight], abs=1e-6)  # the same answers and scores as without the stop
