"""RunLog: the snapshot, the events, the step clock, and what reaches the run folder (main process only)."""

from __future__ import annotations

import json
import time

from studio.run_log import RunLog
from studio.status import RunStatus


def test_a_new_log_is_queued_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = RunLog("r")
    log.set_state(RunStatus.LOADING, "no folder yet")
    assert log.state is RunStatus.LOADING and log.snapshot()["name"] == "r" and log.snapshot()["run_dir"] is None
    assert list(tmp_path.iterdir()) == []


def test_set_state_reaches_snapshot_events_train_log_and_state_json(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    log = RunLog("r")
    log.run_dir = tmp_path
    log.set_state(RunStatus.TRAINING, "resuming from checkpoint-4", started=1.5)
    log.set_state(RunStatus.DONE)
    snap = log.snapshot()
    assert snap["state"] == "done" and type(snap["state"]) is str and snap["message"] == ""
    assert [(e["index"], e["state"], e["message"]) for e in log.events()] == [
        (0, "training", "resuming from checkpoint-4"), (1, "done", "")]
    assert [e["index"] for e in log.events(1)] == [1] and log.events(5) == []
    state = json.loads((tmp_path / "state.json").read_text())
    assert state == {"status": "done", "message": "", "started": 1.5}
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["training: resuming from checkpoint-4", "done"]


def test_only_the_main_process_writes_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    log = RunLog("r")
    log.run_dir = tmp_path
    log.set_state(RunStatus.SAVING, "writing the adapter")
    log.write_log("a line")
    assert log.state is RunStatus.SAVING and len(log.events()) == 1
    assert list(tmp_path.iterdir()) == []


def test_snapshot_is_a_copy():
    log = RunLog("r")
    snap = log.snapshot()
    snap["loss"] = 9.0
    log.update(loss=1.25)
    assert log.snapshot()["loss"] == 1.25 and snap["loss"] == 9.0


def test_step_clock_counts_only_steps_since_training_began():
    log = RunLog("r")
    log.train_began(step=4, total=10)  # a resume from checkpoint-4
    assert log.snapshot()["step"] == 4 and log.snapshot()["total"] == 10
    log.step_ended(4, 10, 0.4, tokens=0)
    assert log.snapshot()["eta_seconds"] is None and log.snapshot()["step_seconds"] is None
    time.sleep(0.05)
    log.step_ended(6, 10, 0.6, tokens=640)
    snap = log.snapshot()
    assert snap["step"] == 6 and snap["epoch"] == 0.6 and snap["tokens"] == 640
    assert snap["step_seconds"] >= 0.025 and abs(snap["eta_seconds"] - 4 * snap["step_seconds"]) < 1e-6
    assert snap["train_seconds"] >= 0.05 and abs(snap["step_at"] - time.time()) < 5
