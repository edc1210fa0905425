"""TrainingJob on tiny random models: run folder, events, stop, resume equivalence, failures, settings."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch
from transformers import TrainerCallback

from studio import headless, runs, training
from studio.config import ConfigError, RunConfig
from studio.hardware import cpu_has_bf16, resolve_precision
from studio.train_parts import EarlyStop, build_args, memory_now


def make_cfg(tiny_dirs, chat_file, tmp_path, **train) -> RunConfig:
    data = train.pop("data", {})
    base = {"max_steps": 6, "micro_batch_size": 2, "learning_rate": 1e-2, "output_dir": str(tmp_path / "runs"),
            "precision": "fp32", "run_name": "t"}
    return RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])},
                                "method": {"name": "lora", "r": 4, "targets": ["all-linear"]},
                                "data": {"path": str(chat_file), "packing": False, **data},
                                "train": {**base, **train}})


class At(TrainerCallback):
    """Runs ``action(job)`` when step ``step`` begins (so our stop flag is seen at that step's end)."""

    def __init__(self, step, action):
        self.step, self.action, self.job = step, action, None

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.step - 1:
            self.action(self.job)


def run_job(cfg, *callbacks, resume_dir=None) -> training.TrainingJob:
    if resume_dir:
        job = training.TrainingJob.resume(resume_dir, start=False, callbacks=callbacks)
    else:
        job = training.TrainingJob(cfg, callbacks=callbacks)
    for cb in callbacks:
        cb.job = job
    job.start()
    assert job.wait(120)
    return job


def test_run_writes_the_folder(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=None, epochs=1.0)
    run_dir = headless.run_headless(cfg, quiet=True)
    for name in ("config.yaml", "state.json", "metrics.jsonl", "README.md", "train.log",
                 "adapter/adapter_model.safetensors", "tokenizer/tokenizer_config.json"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "adapter.tmp").exists()
    state = runs.read_state(run_dir)
    assert state["status"] == "done" and state["step"] == state["total_steps"] == 12
    assert state["adapter_bytes"] > 0 and state["final_loss"] > 0
    rows = runs.read_metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert all(r["tokens_per_second"] > 0 and r["memory_bytes"] > 0 for r in rows)
    # one epoch, unpacked: the counted tokens are exactly the dataset's real (non-pad) tokens
    from studio import data, models
    real = data.build(cfg, models.load_tokenizer(cfg.model)).stats.real_tokens
    assert rows[-1]["tokens"] == real
    assert RunConfig.load(run_dir / "config.yaml").to_dict() == cfg.to_dict()
    assert "lora" in (run_dir / "README.md").read_text()


def test_snapshot_events_and_many_readers(tiny_dirs, chat_file, tmp_path):
    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path))
    snap = job.snapshot()
    assert snap["state"] == "done" and snap["step"] == snap["total"] == 6 and snap["run_dir"] == str(job.run_dir)
    assert snap["tokens_per_second"] > 0 and snap["memory_bytes"] > 0 and snap["loss"] is not None
    everything = job.events(0)
    assert [e["index"] for e in everything] == list(range(len(everything)))
    assert [e["step"] for e in everything if e["type"] == "log"] == [1, 2, 3, 4, 5, 6]
    assert job.events(3) == everything[3:]  # a second reader that joined late gets the same tail
    assert job.events(len(everything)) == []
    states = [e["state"] for e in everything if e["type"] == "state"]
    assert states == ["queued", "loading", "training", "saving", "done"]
    assert training.current_job() is job and job.model is not None


def test_second_start_is_refused_and_train_keeps_going(tiny_dirs, chat_file, tmp_path):
    gate = threading.Event()

    class Hold(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            gate.wait(60)

    first = training.TrainingJob(make_cfg(tiny_dirs, chat_file, tmp_path), callbacks=(Hold(),)).start()
    try:
        with pytest.raises(ConfigError, match=f"a run is already going: {first.name}"):
            training.TrainingJob(make_cfg(tiny_dirs, chat_file, tmp_path, run_name="other")).start()
        assert first._thread.daemon is False  # the process keeps the run alive
    finally:
        gate.set()
    assert first.wait(120) and first.state == "done"
    second = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, run_name="other"))
    assert second.state == "done"


def test_run_name_cannot_leave_the_output_folder(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, run_name="../escape", max_steps=1)
    run_dir = headless.run_headless(cfg, quiet=True)
    assert run_dir.parent == tmp_path / "runs" and run_dir.name == "escape"
    assert not (tmp_path / "escape").exists()


def test_stop_saves_what_was_trained(tiny_dirs, chat_file, tmp_path):
    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=10), At(3, lambda j: j.stop()))
    state = runs.read_state(job.run_dir)
    assert job.state == state["status"] == "stopped" and state["step"] == 3
    assert (job.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert runs.last_checkpoint(job.run_dir).name == "checkpoint-3"


def test_resume_gives_the_same_loss_curve(tiny_dirs, chat_file, tmp_path):
    whole = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=10, run_name="whole"))
    expected = runs.loss_curve(whole.run_dir)["loss"]
    part = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=10, run_name="part"),
                   At(4, lambda j: j.stop()))
    assert part.state == "stopped"
    resumed = run_job(None, resume_dir=part.run_dir)
    assert resumed.state == "done" and resumed.run_dir == part.run_dir
    curve = runs.loss_curve(part.run_dir)
    assert curve["step"] == list(range(1, 11))
    assert curve["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert runs.read_state(part.run_dir)["step"] == 10


def test_resume_without_checkpoint_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    RunConfig().save(tmp_path / "r" / "config.yaml")
    with pytest.raises(ConfigError, match="no checkpoint"):
        training.TrainingJob.resume(tmp_path / "r")


class Boom(TrainerCallback):
    def __init__(self, error, step=2):
        self.error, self.step, self.model_ref = error, step, None

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model_ref = weakref.ref(model)

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step and self.error is not None:
            error, self.error = self.error, None  # once: a retry carries the same callbacks
            raise error


def test_failure_in_the_thread_keeps_logs_and_frees_the_model(tiny_dirs, chat_file, tmp_path):
    boom = Boom(RuntimeError("bad batch\nsecond line"))
    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, save_steps=1), boom)
    state = runs.read_state(job.run_dir)
    assert job.state == state["status"] == "failed"
    assert state["message"] == "RuntimeError: bad batch"  # one line
    assert [r["step"] for r in runs.read_metrics(job.run_dir)] == [1]
    assert runs.last_checkpoint(job.run_dir).name == "checkpoint-1"
    assert "Traceback" in (job.run_dir / "train.log").read_text()
    assert job.model is None
    gc.collect()
    assert boom.model_ref() is None, "the failed run's model is still referenced"
    again = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, run_name="again"))
    assert again.state == "done"


def test_out_of_memory_says_what_to_change_and_retries_smaller(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, micro_batch_size=4, grad_accum=1, max_steps=3, save_steps=1)
    boom = Boom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), step=2)
    job = run_job(cfg, boom)
    assert job.state == "failed" and isinstance(job.error, training.OutOfMemory)
    message = job.snapshot()["message"]
    for hint in ("micro-batch", "shorter sequences", "gradient_checkpointing", "QLoRA"):
        assert hint in message
    assert runs.read_state(job.run_dir)["message"] == message
    assert [r["step"] for r in runs.read_metrics(job.run_dir)] == [1]
    assert runs.last_checkpoint(job.run_dir).name == "checkpoint-1"
    assert job.model is None
    gc.collect()
    assert boom.model_ref() is None, "the model that ran out of memory is still referenced"
    retry = job.retry_smaller()
    assert retry.wait(120) and retry.state == "done"
    assert (retry.cfg.train.micro_batch_size, retry.cfg.train.grad_accum) == (2, 2)
    assert isinstance(job.error, ConfigError)  # run_headless re-raises it: one `error:` line, exit 2


def test_headless_retries_smaller_after_out_of_memory(tiny_dirs, chat_file, tmp_path, capsys):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, micro_batch_size=4, grad_accum=1, max_steps=3)
    with pytest.raises(training.OutOfMemory):  # no retries asked: the run fails with the advice
        headless.run_headless(cfg, quiet=True, callbacks=(Boom(torch.OutOfMemoryError("CUDA out of memory")),))
    cfg.train.run_name = "t2"
    run_dir = headless.run_headless(cfg, quiet=True, retries=1,
                                    callbacks=(Boom(torch.OutOfMemoryError("CUDA out of memory")),))
    assert run_dir.name == "t2-retry" and runs.read_state(run_dir)["status"] == "done"
    retried = RunConfig.load(run_dir / "config.yaml").train
    assert (retried.micro_batch_size, retried.grad_accum) == (2, 2)
    assert runs.read_state(tmp_path / "runs" / "t2")["status"] == "failed"  # the first attempt stays, as failed
    err = capsys.readouterr().err
    assert "retrying as t2-retry with train.micro_batch_size=2, train.grad_accum=2" in err


def test_headless_failure_is_one_config_error(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, data={"path": str(tmp_path / "missing.jsonl")})
    with pytest.raises(ConfigError) as err:
        headless.run_headless(cfg, quiet=True)
    assert "missing.jsonl" in str(err.value)
    failed = runs.list_runs(tmp_path / "runs")[0]
    assert failed.status == "failed" and "missing.jsonl" in failed.state["message"]


def test_eval_split_and_early_stopping(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=8, eval_steps=2, early_stopping_patience=1,
                   learning_rate=0.5, data={"val_fraction": 0.25})
    job = run_job(cfg)
    rows = runs.read_metrics(job.run_dir)
    evals = [r for r in rows if "eval_loss" in r]
    assert evals and all(r["step"] % 2 == 0 for r in evals)
    assert runs.read_state(job.run_dir)["final_eval_loss"] is not None


def test_early_stop_callback_counts_evaluations_without_improvement():
    from transformers import TrainerControl

    stop, control = EarlyStop(patience=2), TrainerControl()
    for loss in (3.0, 2.0, 2.5, 2.1):
        stop.on_evaluate(None, None, control, metrics={"eval_loss": loss})
    assert control.should_training_stop


def test_settings_map_to_trainer_arguments(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, optimizer="sgd", scheduler="linear", weight_decay=0.1,
                   max_grad_norm=0.5, seed=7, warmup_ratio=0.1, grad_accum=3, gradient_checkpointing=True)
    args = build_args(cfg, tmp_path / "ck", lr=3e-4, total_steps=40, has_eval=False)
    assert (args.optim, args.lr_scheduler_type, args.weight_decay, args.max_grad_norm) == ("sgd", "linear", 0.1, 0.5)
    assert (args.seed, args.gradient_accumulation_steps, args.learning_rate, args.warmup_steps) == (7, 3, 3e-4, 0.1)
    assert args.activation_checkpointing and not args.bf16 and args.eval_strategy == "no"
    assert resolve_precision("auto") == ("bf16" if cpu_has_bf16() or torch.cuda.is_available() else "fp32")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a GPU"):
            resolve_precision("fp16")
    assert memory_now()["memory_bytes"] > 0


def test_learning_rate_defaults_to_the_method_s(tiny_dirs, chat_file, tmp_path):
    from studio import methods

    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, learning_rate=None, max_steps=1))
    setup = next(e for e in job.events(0) if e["type"] == "setup")
    assert setup["learning_rate"] == methods.get("lora").learning_rate


def test_disk_full_while_saving_fails_clearly_and_keeps_the_checkpoint(tiny_dirs, chat_file, tmp_path, monkeypatch):
    import errno

    from studio import methods

    save = methods.save_result

    def full(model, spec, folder):
        if "checkpoint-" in str(folder):  # a checkpoint's result (RUN@N) goes through; the final save hits the full disk
            return save(model, spec, folder)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(methods, "save_result", full)
    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=4, save_steps=2))
    assert job.state == "failed" and "disk is full" in job.snapshot()["message"]
    assert runs.last_checkpoint(job.run_dir).name == "checkpoint-4"
    assert not (job.run_dir / "adapter").exists()
    assert runs.load_run(job.run_dir).status == "failed"


def test_resume_continues_the_token_count(tiny_dirs, chat_file, tmp_path):
    part = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=6), At(3, lambda j: j.stop()))
    run_job(None, resume_dir=part.run_dir)
    tokens = [r["tokens"] for r in runs.read_metrics(part.run_dir) if "tokens" in r]
    assert tokens == sorted(tokens) and len(tokens) == 6


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_logits_only_where_loss_is_gives_the_same_curve(tiny_dirs, chat_file, tmp_path, monkeypatch, family):
    from studio.train_parts import StudioTrainer

    curves = []
    for sparse in (False, True):
        monkeypatch.setattr(StudioTrainer, "sparse_logits", sparse)
        cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=4, grad_accum=2, micro_batch_size=1,
                       max_seq_len=256, run_name=f"s{sparse}")  # within GPT-2's 256 positions
        cfg.model.id = str(tiny_dirs[family])
        curves.append(runs.loss_curve(run_job(cfg).run_dir)["loss"])
    assert curves[1] == pytest.approx(curves[0], rel=1e-5, abs=1e-6)


def test_an_interrupted_run_is_listed_and_resumes(tiny_dirs, chat_file, tmp_path):
    import subprocess
    import sys

    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=8, save_steps=4), At(6, lambda j: j.stop()))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # what a kill -9 at step 6 leaves: status still 'training', its process gone, checkpoint-4 the last complete one
    runs.write_state(job.run_dir, status="training", pid=dead.pid)
    import shutil
    shutil.rmtree(job.run_dir / "checkpoints" / "checkpoint-6")
    assert runs.load_run(job.run_dir).status == "interrupted"
    resumed = run_job(None, resume_dir=job.run_dir)
    assert resumed.state == "done" and runs.read_state(job.run_dir)["step"] == 8
    assert runs.loss_curve(job.run_dir)["step"] == list(range(1, 9))
