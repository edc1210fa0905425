"""The hardware sampler and the trackers on a tiny run: samples on disk and in the snapshot, no thread left."""

from __future__ import annotations

import threading

import pytest

from studio import hw_sampler, preflight, runs, trackers
from studio.config import ConfigError
from tests.test_training import make_cfg, run_job


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hardware-sampler"]


def test_run_samples_the_cpu_and_leaves_no_thread(tiny_dirs, chat_file, tmp_path):
    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path))
    assert job.state.value == "done"
    assert not _sampler_threads()
    rows = hw_sampler.read_hardware(job.run_dir)
    assert len(rows) >= 2  # the first reading and the last one at stop
    assert all(r["rss_bytes"] > 50_000_000 and r["cpu_percent"] >= 0 for r in rows)
    assert any(r["cpu_percent"] > 0 for r in rows[1:])  # training keeps a core busy
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    if hw_sampler.gpu_reader() is None:  # this machine has no GPU: the CPU path only
        assert all("gpus" not in r for r in rows)
    assert job.snapshot()["hardware"] == rows[-1]
    assert [e for e in job.events() if e["type"] == "hardware"]


def test_sampler_samples_at_most_once_a_second(tmp_path):
    sampler = hw_sampler.HardwareSampler(tmp_path, interval=0.01)
    assert sampler.interval == hw_sampler.MIN_INTERVAL
    sampler.start()
    threading.Event().wait(2.5)
    sampler.stop()
    assert not sampler.alive and not _sampler_threads()
    # readings at 0, 1 and 2 s, and the last one at stop
    assert 3 <= len(sampler.samples) <= 4
    gaps = [b["elapsed"] - a["elapsed"] for a, b in zip(sampler.samples, sampler.samples[1:-1])]
    assert all(g >= 0.95 for g in gaps)


def test_sampling_can_be_turned_off(tiny_dirs, chat_file, tmp_path):
    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, sample_hardware=False, max_steps=2))
    assert not (job.run_dir / hw_sampler.FILE_NAME).exists() and "hardware" not in job.snapshot()


def test_missing_tracker_is_one_line_and_the_run_does_not_start(tiny_dirs, chat_file, tmp_path, monkeypatch):
    monkeypatch.setitem(trackers.TRACKERS, "wandb", "studio_no_such_module")
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, report_to="wandb")
    assert preflight.problems(cfg) == ["train.report_to: wandb is not installed (pip install wandb), "
                                       "or set train.report_to=none"]
    with pytest.raises(ConfigError):
        run_job(cfg)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_tensorboard_events_land_in_the_run_folder(tiny_dirs, chat_file, tmp_path):
    pytest.importorskip("tensorboard")
    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, report_to="tensorboard", max_steps=3))
    assert job.state.value == "done"
    events = list((job.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert len(acc.Scalars("train/loss")) == 3


def test_mlflow_run_lands_in_the_run_folder(tiny_dirs, chat_file, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, report_to="mlflow", max_steps=3))
    assert job.state.value == "done", job.snapshot()["message"]
    store = job.run_dir / "mlruns"
    client = mlflow.tracking.MlflowClient(tracking_uri=store.resolve().as_uri())
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    assert len(client.get_metric_history(found[0].info.run_id, "loss")) == 3
    assert runs.read_state(job.run_dir)["status"] == "done"
