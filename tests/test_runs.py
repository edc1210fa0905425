"""Run folders: names, atomic state, metrics, listing, interrupted runs, checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from studio import runs
from studio.config import ConfigError, RunConfig


@pytest.mark.parametrize("name, expected", [
    ("../x", "x"), ("../../etc/passwd", "etc-passwd"), ("/abs/path", "abs-path"), ("a..b", "a.b"),
    ("..", "run"), ("", "run"), ("my run: 1", "my-run-1"), ("lora-2024.01", "lora-2024.01"),
])
def test_sanitize_name(name, expected):
    assert runs.sanitize_name(name) == expected


def test_new_run_dir_stays_inside_and_never_overwrites(tmp_path):
    root = tmp_path / "runs"
    first = runs.new_run_dir(root, "../x")
    second = runs.new_run_dir(root, "x")
    assert first == root / "x" and second == root / "x-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_state_is_merged_and_written_atomically(tmp_path):
    runs.write_state(tmp_path, status="training", step=1)
    runs.write_state(tmp_path, step=2)
    assert runs.read_state(tmp_path) == {"status": "training", "step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind
    (tmp_path / "state.json").write_text("{broken")
    assert runs.read_state(tmp_path) == {}


def test_metrics_survive_a_line_cut_short(tmp_path):
    runs.append_metrics(tmp_path, {"step": 1, "loss": 2.0})
    runs.append_metrics(tmp_path, {"step": 2, "eval_loss": 1.5})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "lo')  # a crash in the middle of a write
    assert [r["step"] for r in runs.read_metrics(tmp_path)] == [1, 2]
    assert runs.loss_curve(tmp_path) == {"step": [1], "loss": [2.0], "eval_step": [2], "eval_loss": [1.5]}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _make_run(root, name, **state):
    path = root / name
    path.mkdir(parents=True)
    RunConfig().save(path / "config.yaml")
    runs.write_state(path, **state)
    return path


def test_list_runs_reports_status_and_interrupted(tmp_path):
    _make_run(tmp_path, "a", status="done", started=1.0, step=5, total_steps=5, final_loss=1.25)
    (tmp_path / "a" / "adapter").mkdir()
    (tmp_path / "a" / "adapter" / "w.safetensors").write_bytes(b"x" * 2048)
    _make_run(tmp_path, "b", status="training", started=2.0, pid=_dead_pid())
    _make_run(tmp_path, "c", status="training", started=3.0, pid=os.getpid())
    (tmp_path / "not-a-run").mkdir()
    found = runs.list_runs(tmp_path)
    assert [r.name for r in found] == ["c", "b", "a"]
    assert [r.status for r in found] == ["training", "interrupted", "done"]
    a = found[2]
    assert a.adapter_bytes == 2048 and a.config.method.name == "lora"
    line = a.summary_line()
    assert "done" in line and "1.2500" in line and "5/5" in line
    assert runs.list_runs(tmp_path / "missing") == []


def test_load_run_with_a_broken_config(tmp_path):
    path = tmp_path / "r"
    path.mkdir()
    (path / "config.yaml").write_text("model: [unclosed")
    run = runs.load_run(path)
    assert run.config is None and "not valid YAML" in run.config_problem
    assert "?" in run.summary_line()
    with pytest.raises(ConfigError):
        runs.load_run(tmp_path / "nope")


def test_last_checkpoint_skips_one_cut_short(tmp_path):
    ck = tmp_path / "checkpoints"
    for step, complete in ((5, True), (10, True), (15, False)):
        (ck / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (ck / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert runs.last_checkpoint(tmp_path) == ck / "checkpoint-10"
    assert runs.last_checkpoint(tmp_path / "none") is None


def test_runs_command_lists_folders(tmp_path, capsys):
    from studio.cli import main

    _make_run(tmp_path, "one", status="stopped", started=1.0)
    assert main(["runs", "--root", str(tmp_path)]) == 0
    assert "one" in capsys.readouterr().out
