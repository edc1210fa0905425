"""Checkpoints as results: RUN@N in chat, export and eval, the checkpoints listed with their losses."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

from studio import chat, checkpoints, cli, methods, models, runs
from studio.chat_adapters import read_run
from studio.config import ConfigError
from tests.test_training import make_cfg, run_job


@pytest.fixture(scope="module")
def run_with_checkpoints(tiny_dirs, tmp_path_factory):
    """One 6-step run that checkpoints (and evaluates) every 2 steps, shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("ckpt")
    rows = tmp / "chat.jsonl"
    rows.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}?"},
                                                       {"role": "assistant", "content": f"answer number {i}."}]})
                              for i in range(24)))
    job = run_job(make_cfg(tiny_dirs, rows, tmp, max_steps=6, save_steps=2, eval_steps=2,
                           data={"val_fraction": 0.25}))
    assert job.state.value == "done"
    return job.run_dir


def _logits(model_folder, result_folder, ids):
    base, _ = models.load(models_spec(model_folder))
    model = methods.load_result(base, result_folder)
    with torch.no_grad():
        return model(input_ids=ids).logits


def models_spec(folder):
    from studio.config import ModelSpec

    return ModelSpec(id=str(folder))


def test_checkpoints_are_listed_with_their_losses(run_with_checkpoints):
    found = checkpoints.list_checkpoints(run_with_checkpoints)
    assert [c.step for c in found] == [4, 6]  # Trainer keeps the last two
    metrics = runs.read_metrics(run_with_checkpoints)
    for c in found:
        assert c.loss == [r["loss"] for r in metrics if "loss" in r and r["step"] == c.step][0]
        assert c.eval_loss == [r["eval_loss"] for r in metrics if "eval_loss" in r and r["step"] == c.step][0]
        assert c.target == f"{run_with_checkpoints}@{c.step}" and f"step {c.step}" in c.label()
    # no pickle beside the result: the studio loads it as it loads any result
    assert not [p for c in found for p in (c.path / checkpoints.RESULT_DIR).iterdir() if p.suffix in (".pt", ".bin")]


def test_run_at_n_loads_that_checkpoint_s_adapter(run_with_checkpoints, tiny_dirs):
    ids = torch.tensor([[5, 9, 17, 33, 60, 2]])
    cfg, _, folder = read_run(f"{run_with_checkpoints}@4")
    assert folder == run_with_checkpoints / "checkpoints" / "checkpoint-4" / "result"
    at4 = _logits(tiny_dirs["llama"], folder, ids)
    # the adapter Trainer itself wrote into checkpoint-4 gives the same logits
    base, _ = models.load(cfg.model)
    trainer_own = PeftModel.from_pretrained(base, run_with_checkpoints / "checkpoints" / "checkpoint-4")
    with torch.no_grad():
        torch.testing.assert_close(at4, trainer_own(input_ids=ids).logits)
    at6 = _logits(tiny_dirs["llama"], read_run(f"{run_with_checkpoints}@6")[2], ids)
    final = _logits(tiny_dirs["llama"], run_with_checkpoints / "adapter", ids)
    torch.testing.assert_close(at6, final)  # the last checkpoint is the final result
    assert not torch.allclose(at4, at6)


def test_missing_step_is_one_line(run_with_checkpoints, capsys):
    with pytest.raises(ConfigError, match=r"no checkpoint at step 3 .*steps with one: 4, 6"):
        read_run(f"{run_with_checkpoints}@3")
    assert cli.main(["chat", f"{run_with_checkpoints}@3", "--prompt", "hi"]) == 2
    assert "steps with one: 4, 6" in capsys.readouterr().err


def test_chat_export_and_eval_take_run_at_n(run_with_checkpoints, tmp_path, capsys):
    target = f"{run_with_checkpoints}@4"
    alone = "".join(chat.answer_once(target, "question 1?", max_new_tokens=8))
    engine = chat.ChatEngine(read_run(target)[0].model)
    engine.add_adapter("at4", target)
    engine.add_adapter("at6", f"{run_with_checkpoints}@6")  # two checkpoints of one run on one base
    gen = chat.GenSettings(max_new_tokens=8, greedy=True)
    last = {}
    for last in engine.stream([{"role": "user", "content": "question 1?"}], panes=["at4", "at6"], gen=gen):
        pass
    assert last["at4"] == alone
    assert cli.main(["export", target, "--out", str(tmp_path / "out")]) == 0
    exported = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "adapter_model.safetensors" in exported and "tokenizer_config.json" in exported
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == \
        (run_with_checkpoints / "checkpoints" / "checkpoint-4" / "result" / "adapter_model.safetensors").read_bytes()
    prompts = tmp_path / "p.txt"
    prompts.write_text("question 2?\n")
    assert cli.main(["eval", target, "--prompts", str(prompts), "--max-new-tokens", "4"]) == 0
    assert (run_with_checkpoints / "eval@4.jsonl").is_file()


def test_keep_best_keeps_the_lowest_eval_loss_checkpoint(tiny_dirs, tmp_path):
    # held-out answers in letters the training answers never use: eval loss rises as the run learns its own
    # answers, so the best checkpoint is an early one and the last step is not it
    def write(name, answer):
        path = tmp_path / name
        path.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}?"},
                                                           {"role": "assistant", "content": answer(i)}]})
                                  for i in range(16)))
        return path

    train = write("train.jsonl", lambda i: f"answer number {i}.")
    val = write("val.jsonl", lambda i: "ZQX VKJ WYZ" * (1 + i % 3))
    cfg = make_cfg(tiny_dirs, train, tmp_path, max_steps=6, eval_steps=2, learning_rate=3e-2, keep_best=True,
                   data={"val_path": str(val)})
    job = run_job(cfg)
    assert job.state.value == "done", job.error
    evals = {}
    for r in runs.read_metrics(job.run_dir):  # the first at a step: the last one also logs the final evaluation
        if "eval_loss" in r:
            evals.setdefault(r["step"], r["eval_loss"])
    best = min(evals, key=evals.get)
    assert best < 6 and evals[best] < evals[6]  # the setup does what it claims: the last step is not the best
    assert runs.read_state(job.run_dir)["kept_step"] == best
    kept = job.run_dir / "checkpoints" / f"checkpoint-{best}" / checkpoints.RESULT_DIR / "adapter_model.safetensors"
    assert (job.run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == kept.read_bytes()
    assert job.result["final_eval_loss"] == pytest.approx(evals[best], rel=1e-5)  # evaluated after loading it


def test_keep_best_without_held_out_rows_is_one_line(tiny_dirs, tmp_path):
    from studio import preflight

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "a?"}, {"role": "assistant", "content": "b"}]}))
    found = preflight.problems(make_cfg(tiny_dirs, rows, tmp_path, keep_best=True))
    assert found == ["train.keep_best: the best checkpoint is chosen by eval loss; hold rows out (data.val_fraction "
                     "or data.val_path) or set keep_best to false"]
    found = preflight.problems(make_cfg(tiny_dirs, rows, tmp_path, keep_best=True, save_steps=3, eval_steps=2,
                                        data={"val_fraction": 0.25}))
    assert len(found) == 1 and found[0].startswith("train.save_steps: with train.keep_best")
