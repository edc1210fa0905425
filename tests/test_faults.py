"""Faults: a stop that arrives while the job is saving, a kill -9 mid-write and mid-training, a full disk.

The write path is the real one (methods.save_result into runs.replace_folder); the save tests only pause
it at a known point: a callback during the final evaluation, or the method's own save that returns (or
hangs) once the weights file is on disk and before studio_method.json is written. The mid-training kill
is a SIGKILL of a real ``python -m studio train``; the full disk is a real tmpfs too small for the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from transformers import TrainerCallback

from studio import method_api, methods, runs, training
from studio.config import RunConfig
from tests.test_training import At, make_cfg, run_job

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
        if "checkpoint-" in str(folder):  # a checkpoint's result (RUN@N), written while training: not the final save
            return
        written.set()
        assert resume.wait(60)

    monkeypatch.setitem(method_api._REGISTRY, "lora", dataclasses.replace(lora, save=pause_after_weights))
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
from studio import method_api, methods, training
from studio.config import RunConfig

lora = methods.get("lora")

def save_then_hang(model, spec, folder):
    lora.save(model, spec, folder)  # the weights are on disk; studio_method.json is not yet
    if "checkpoint-" in str(folder):  # a checkpoint's result (RUN@N), written while training
        return
    print("WROTE", folder, flush=True)
    time.sleep(600)

method_api._REGISTRY["lora"] = dataclasses.replace(lora, save=save_then_hang)
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


def _wait_for_checkpoint(proc: subprocess.Popen, checkpoint: Path, timeout: float = 300) -> None:
    """Until ``checkpoint`` is complete: its trainer_state.json, which Trainer writes last, parses."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
            return
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)


def test_kill_in_the_middle_of_training_keeps_the_checkpoint_and_resumes(tiny_dirs, chat_file, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerState

    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=60, save_steps=4)
    cfg.save(tmp_path / "preset.yaml")
    run_dir = tmp_path / "runs" / "t"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "studio", "train", str(tmp_path / "preset.yaml"), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    try:
        _wait_for_checkpoint(proc, run_dir / "checkpoints" / "checkpoint-4")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(60)

    state = runs.read_state(run_dir)
    assert state["status"] == "training" and 4 <= state["step"] < 60, "the kill did not land mid-training"
    assert not (run_dir / "adapter").exists()
    assert [(r.name, r.status) for r in runs.list_runs(tmp_path / "runs")] == [("t", "interrupted")]
    assert RunConfig.load(run_dir / "config.yaml").to_dict() == cfg.to_dict()
    logged = [r["step"] for r in runs.read_metrics(run_dir)]
    checkpoint = runs.last_checkpoint(run_dir)
    step = int(checkpoint.name.rpartition("-")[2])
    assert step >= 4 and logged == list(range(1, len(logged) + 1)) and len(logged) >= step
    assert TrainerState.load_from_json(str(checkpoint / "trainer_state.json")).global_step == step
    assert load_file(checkpoint / "adapter_model.safetensors"), "the checkpoint's adapter is empty"

    resumed = run_job(None, resume_dir=run_dir)
    assert resumed.state == "done" and runs.read_state(run_dir)["step"] == 60
    assert f"resuming from {checkpoint.name}" in [e["message"] for e in resumed.events() if e["type"] == "state"]
    assert runs.loss_curve(run_dir)["step"] == list(range(1, 61))
    _assert_complete_adapter(run_dir, tiny_dirs)


@contextlib.contextmanager
def _small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted at ``folder``, unmounted afterwards. Needs root (CI runs as root)."""
    assert os.geteuid() == 0, "the full-disk test mounts a tmpfs, which needs root; run it as root"
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs here: {done.stderr.strip()}"
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)]).returncode:  # still busy: detach it now, free it when idle
            subprocess.run(["umount", "-l", str(folder)], check=True)


# At these sizes checkpoint-1 fits and checkpoint-2 does not; the write that fails first differs:
# safetensors (SafetensorError ... No space left on device), torch.save ("basic_ios::clear: iostream
# error"), torch.save again ("[enforce fail at inline_container.cc] unexpected pos")
@pytest.mark.parametrize("size", ["220k", "260k", "300k"])
def test_a_full_disk_fails_the_run_clearly_and_keeps_the_checkpoint(tiny_dirs, chat_file, tmp_path, size):
    from safetensors.torch import load_file

    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=6, save_steps=1)
    cfg.train.output_dir = str(tmp_path / "disk")
    with _small_disk(tmp_path / "disk", size):
        job = run_job(cfg)
        run_dir = job.run_dir
        assert job.state == "failed" and runs.read_state(run_dir)["status"] == "failed"
        assert job.snapshot()["message"] == (f"the disk is full ({run_dir}): free some space; the last complete "
                                             "checkpoint is intact and Resume continues from it")
        assert isinstance(job.error, training.TrainingError)
        assert "Traceback" in (run_dir / "train.log").read_text()  # the raw error, for whoever looks into it
        assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["checkpoint-1"], "a cut-short save is left"
        assert not (run_dir / "adapter").exists()
        assert load_file(run_dir / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors")
        shutil.copytree(run_dir, tmp_path / "roomy" / "t")
    resumed = run_job(None, resume_dir=tmp_path / "roomy" / "t")  # where there is room, it goes on from there
    assert resumed.state == "done" and runs.read_state(resumed.run_dir)["step"] == 6
    assert "resuming from checkpoint-1" in [e["message"] for e in resumed.events() if e["type"] == "state"]
    _assert_complete_adapter(resumed.run_dir, tiny_dirs)
