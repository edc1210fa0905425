"""Faults around the final save: a stop that arrives while the job is saving, and a kill -9 mid-write.

The write path is the real one (methods.save_result into runs.replace_folder); the tests only pause it
at a known point: a callback during the final evaluation, or the method's own save that returns (or
hangs) once the weights file is on disk and before studio_method.json is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from transformers import TrainerCallback

from studio import methods, runs, training
from studio.config import RunConfig
from tests.test_training import At, chat_file, make_cfg, run_job  # noqa: F401 - chat_file is a fixture

ROOT = Path(__file__).resolve().parent.parent


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _assert_complete_adapter(run_dir: Path, tiny_dirs) -> None:
    """The adapter folder is whole: method file, weights that load onto the base, size recorded, no leftovers."""
    from studio import models

    adapter = run_dir / "adapter"
    assert (adapter / methods.RESULT_FILE).is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert methods.result_spec(adapter).name == "lora"
    base, _ = models.load(RunConfig.load(run_dir / "config.yaml").model)
    methods.load_result(base, adapter)
    assert runs.read_state(run_dir)["adapter_bytes"] == runs.folder_bytes(adapter)
    assert not (run_dir / "adapter.tmp").exists() and not (run_dir / "adapter.old").exists()
    assert (run_dir / "tokenizer" / "tokenizer_config.json").is_file()


class StopWhileSaving(TrainerCallback):
    """Asks for a stop from inside the final evaluation, which runs while the job's state is 'saving'."""

    def __init__(self):
        self.job, self.seen_state = None, None

    def on_prediction_step(self, args, state, control, **kw):
        if self.job.state == "saving" and self.seen_state is None:
            self.seen_state = self.job.state
            self.job.stop()


def test_stop_during_the_final_evaluation_still_saves(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=4, eval_steps=100, data={"val_fraction": 0.25})
    hook = StopWhileSaving()
    job = run_job(cfg, hook)
    assert hook.seen_state == "saving"
    state = runs.read_state(job.run_dir)
    assert job.state == state["status"] and state["status"] in ("done", "stopped")
    assert state["step"] == 4
    _assert_complete_adapter(job.run_dir, tiny_dirs)


def test_stop_while_the_adapter_is_written_keeps_it_whole(tiny_dirs, chat_file, tmp_path, monkeypatch):
    lora = methods.get("lora")
    written, resume = threading.Event(), threading.Event()

    def pause_after_weights(model, spec, folder):
        lora.save(model, spec, folder)
        written.set()
        assert resume.wait(60)

    monkeypatch.setitem(methods._REGISTRY, "lora", dataclasses.replace(lora, save=pause_after_weights))
    job = training.TrainingJob(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=4)).start()
    try:
        assert written.wait(120)
        assert job.state == "saving"
        job.stop()
    finally:
        resume.set()
    assert job.wait(120)
    state = runs.read_state(job.run_dir)
    assert job.state == state["status"] and state["status"] in ("done", "stopped"), state
    _assert_complete_adapter(job.run_dir, tiny_dirs)
    # what was saved is what was trained
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(job.run_dir / "adapter" / "adapter_model.safetensors")
    trained = get_peft_model_state_dict(job.model)
    assert saved.keys() == trained.keys() and all(saved[k].equal(trained[k]) for k in saved)


_CHILD = r"""
import dataclasses, sys, time
from studio import methods, training
from studio.config import RunConfig

lora = methods.get("lora")

def save_then_hang(model, spec, folder):
    lora.save(model, spec, folder)  # the weights are on disk; studio_method.json is not yet
    print("WROTE", folder, flush=True)
    time.sleep(600)

methods._REGISTRY["lora"] = dataclasses.replace(lora, save=save_then_hang)
where = sys.argv[1]
job = training.TrainingJob.resume(where) if sys.argv[2] == "resume" else \
    training.TrainingJob(RunConfig.load(where)).start()
job.wait()
"""


def _kill_while_saving(target: str | Path, mode: str) -> str:
    """Run a job in a child process, SIGKILL it once the adapter's weights are written; return where it wrote."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(target), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    try:
        line = ""
        while not line.startswith("WROTE"):
            line = proc.stdout.readline()
            assert line, "the child ended before it wrote the adapter"
        proc.kill()
        proc.wait(60)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.stdout.close()
    return line.split(maxsplit=1)[1].strip()


def test_kill_during_the_first_save_leaves_no_adapter_and_resumes(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=4, save_steps=2)
    cfg.save(tmp_path / "config.yaml")
    written = Path(_kill_while_saving(tmp_path / "config.yaml", "new"))
    run_dir = tmp_path / "runs" / "t"
    assert not (run_dir / "adapter").exists(), "a half-written adapter sits where a complete one belongs"
    assert written.parent == run_dir and (written / "adapter_model.safetensors").is_file()  # killed mid-write
    assert not (written / methods.RESULT_FILE).exists()
    listed = runs.list_runs(tmp_path / "runs")
    assert [(r.name, r.status) for r in listed] == [("t", "interrupted")]
    assert listed[0].adapter_bytes == 0
    assert RunConfig.load(run_dir / "config.yaml").to_dict() == cfg.to_dict()
    assert runs.last_checkpoint(run_dir).name == "checkpoint-4"

    resumed = run_job(None, resume_dir=run_dir)
    assert resumed.state == "done" and runs.read_state(run_dir)["step"] == 4
    assert runs.loss_curve(run_dir)["step"] == [1, 2, 3, 4]
    _assert_complete_adapter(run_dir, tiny_dirs)


def test_kill_while_saving_a_resumed_run_keeps_the_previous_adapter(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=6, save_steps=2)
    first = run_job(cfg, At(3, lambda j: j.stop()))
    assert first.state == "stopped"
    run_dir = first.run_dir
    before = _digest(run_dir / "adapter")

    _kill_while_saving(run_dir, "resume")
    assert runs.load_run(run_dir).status == "interrupted"
    assert _digest(run_dir / "adapter") == before, "the step-3 adapter was overwritten by a half-written one"
    assert methods.result_spec(run_dir / "adapter").name == "lora"
    assert RunConfig.load(run_dir / "config.yaml").to_dict() == cfg.to_dict()
    assert runs.last_checkpoint(run_dir).name == "checkpoint-6"

    resumed = run_job(None, resume_dir=run_dir)
    assert resumed.state == "done" and runs.read_state(run_dir)["step"] == 6
    assert runs.loss_curve(run_dir)["step"] == list(range(1, 7))
    assert _digest(run_dir / "adapter") != before
    _assert_complete_adapter(run_dir, tiny_dirs)


def test_a_folder_left_aside_between_the_renames_is_put_back(tmp_path):
    """A kill between 'adapter -> adapter.old' and 'adapter.tmp -> adapter' leaves only adapter.old."""
    import errno

    target = tmp_path / "adapter"
    (tmp_path / "adapter.old").mkdir()
    (tmp_path / "adapter.old" / "weights").write_text("previous")

    def disk_full(folder):
        folder.mkdir()
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        runs.replace_folder(target, disk_full)
    assert (target / "weights").read_text() == "previous"
    runs.replace_folder(target, lambda folder: (folder.mkdir(), (folder / "weights").write_text("new")))
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
