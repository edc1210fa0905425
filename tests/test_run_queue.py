"""The run queue (order, restart, removal) and the sweep (one run folder per grid point, right settings)."""

from __future__ import annotations

import time

from studio import cli, run_queue, runs, training
from studio.config import ConfigError, RunConfig
from tests.test_training import make_cfg

import pytest


def _cfg(tiny_dirs, chat_file, tmp_path, name):
    return make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=1, run_name=name, sample_hardware=False)


def test_queue_starts_in_order_survives_a_restart_and_skips_removed(tiny_dirs, chat_file, tmp_path):
    root = tmp_path / "runs"
    first = run_queue.RunQueue(root)
    ids = [first.add(_cfg(tiny_dirs, chat_file, tmp_path, n))["id"] for n in ("one", "gone", "two")]
    assert first.remove(ids[1]) and not first.remove("nope")
    # a restart: a new queue object (a new process) reads the same file
    queue = run_queue.RunQueue(root)
    assert [e["name"] for e in queue.entries()] == ["one", "two"]
    blocker = training.TrainingJob(_cfg(tiny_dirs, chat_file, tmp_path, "running")).start()
    runner = run_queue.QueueRunner(queue, interval=0.2)
    assert runner.tick() is None or blocker.wait(0)  # nothing starts while a run trains
    assert blocker.wait(120)
    runner.start()
    try:
        for _ in range(600):
            if len(runner.started) == 2 and runner.started[-1][1].wait(0.2):
                break
            time.sleep(0.2)
    finally:
        runner.stop()
    assert not runner.refused
    assert [job.name for _, job in runner.started] == ["one", "two"]
    assert all(job.state.value == "done" for _, job in runner.started)
    assert runner.started[0][1].snapshot()["step"] == 1
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["one", "running", "two"]  # "gone" never ran
    assert queue.entries() == []
    first_start = runs.read_state(root / "one")["started"]
    assert first_start >= runs.read_state(root / "running")["finished"]
    assert runs.read_state(root / "two")["started"] >= runs.read_state(root / "one")["finished"]


def test_sweep_makes_one_run_folder_per_grid_point(tiny_dirs, chat_file, tmp_path, capsys):
    cfg = _cfg(tiny_dirs, chat_file, tmp_path, "sw")
    preset = tmp_path / "p.yaml"
    preset.write_text(cfg.to_yaml())
    out = tmp_path / "sweep"
    assert cli.main(["sweep", str(preset), "--grid", "method.r=2,8", "--grid", "train.learning_rate=1e-4,3e-3",
                     "--output", str(out), "--quiet"]) == 0
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    got = sorted((RunConfig.load(p / "config.yaml").method.knobs["r"], RunConfig.load(p / "config.yaml").train.learning_rate)
                 for p in folders)
    assert got == [(2, 1e-4), (2, 3e-3), (8, 1e-4), (8, 3e-3)]
    assert all(runs.read_state(p)["status"] == "done" for p in folders)
    assert [p.name for p in folders] == ["sw-r2-learning_rate1e-4", "sw-r2-learning_rate3e-3",
                                         "sw-r8-learning_rate1e-4", "sw-r8-learning_rate3e-3"]
    # --queue fills the queue instead; a bad grid is one line
    assert cli.main(["sweep", str(preset), "--grid", "method.r=4,16", "--queue", "--output", str(out)]) == 0
    assert [e["config"]["method"]["r"] for e in run_queue.RunQueue(out).entries()] == [4, 16]
    assert cli.main(["sweep", str(preset), "--grid", "method.r"]) == 2
    assert "--grid 'method.r'" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        run_queue.grid_configs(cfg, [("train.micro_batch_size", ["0"])])


def test_queue_panel_queues_lists_and_removes(tiny_dirs, chat_file, tmp_path):
    from studio.ui import queue_panel, state

    state.configure(runs_root=tmp_path / "runs")
    text = queue_panel.queue_run(_cfg(tiny_dirs, chat_file, tmp_path, "later"))
    assert "Queued **later**" in text
    rows = queue_panel.queued()
    assert [r[1:] for r in rows] == [["later", "lora", 1]]
    assert "Removed" in queue_panel.remove_queued(rows[0][0]) and queue_panel.queued() == []
