"""The Train tab's live charts (grad norm, hardware), the lr finder panel and checkpoints in the chat pickers."""

from __future__ import annotations

from studio import chat_session
from studio.config import RunConfig
from studio.ui import lr_panel, plots, state, train_tab
from tests.test_training import make_cfg, run_job


def _trace(figure, name):
    return next(t for t in figure.data if t.name == name)


def test_dashboard_fills_grad_norm_and_hardware(tiny_dirs, chat_file, tmp_path):
    job = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=4, save_steps=2))
    view = train_tab.training_view(job)
    assert list(view.figure.data[0].x) == [1, 2, 3, 4]  # train loss first, as before
    grad = _trace(view.figure, "grad norm")
    assert len(grad.y) == 4 and all(g > 0 for g in grad.y)
    assert len(_trace(view.figure, "tokens/s").y) == 4
    cpu, ram = _trace(view.figure, "CPU %"), _trace(view.figure, "RAM GB")
    assert len(cpu.y) >= 2 and all(r > 0.05 for r in ram.y)
    # the checkpoints of this run are offered in the chat pickers, after the run itself
    state.configure(runs_root=tmp_path / "runs")
    picks = chat_session.chat_runs(tmp_path / "runs")
    assert [value for _, value in picks] == [str(job.run_dir), f"{job.run_dir}@2", f"{job.run_dir}@4"]
    assert "step 2" in picks[1][0] and "loss" in picks[1][0]


def test_hardware_series_per_gpu_and_cpu():
    gpu = {"elapsed": 1.0, "cpu_percent": 50, "rss_bytes": 2e9,
           "gpus": [{"index": 0, "utilization": 90, "memory_used_bytes": 4e9, "temperature_c": 60, "power_w": 300},
                    {"index": 1, "utilization": 80, "memory_used_bytes": 3e9, "temperature_c": 55, "power_w": None}]}
    series = plots.hardware_series([gpu])
    assert series["GPU 0 util %"] == ([1.0], [90]) and series["GPU 1 memory GB"] == ([1.0], [3.0])
    assert "GPU 1 power W" not in series and "CPU %" not in series
    assert plots.hardware_series([{"elapsed": 2.0, "cpu_percent": 150, "rss_bytes": 1e9}]) == \
        {"CPU %": ([2.0], [150]), "RAM GB": ([2.0], [1.0])}


def test_lr_panel_finds_a_suggestion_in_range(tiny_dirs, chat_file, tmp_path):
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path)
    figure, text, suggestion = lr_panel.find_learning_rate(cfg, steps=12)
    assert [t.name for t in figure.data] == ["loss", "smoothed"] and len(figure.data[0].x) >= 5
    assert suggestion is None or 1e-6 <= suggestion <= 1e-1
    assert ("suggested train.learning_rate" in text) == (suggestion is not None)
    assert not (tmp_path / "runs").exists()
    bad = RunConfig.from_dict({**cfg.to_dict(), "method": {"name": "lora", "r": 4, "targets": ["nope"]}})
    _, text, suggestion = lr_panel.find_learning_rate(bad, steps=12)
    assert text.startswith("**") and suggestion is None


def test_runs_tab_overlays_grad_norm_and_hardware_across_runs(tiny_dirs, chat_file, tmp_path):
    from studio.ui import runs_tab

    a = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=2, run_name="a"))
    b = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=3, run_name="b"))
    root = str(tmp_path / "runs")
    grad = runs_tab.overlay([a.name, b.name], root, "grad norm")
    assert [t.name for t in grad.data] == [a.name, b.name] and [len(t.y) for t in grad.data] == [2, 3]
    ram = runs_tab.overlay([a.name, b.name], root, "RAM GB")
    assert [t.name for t in ram.data] == [a.name, b.name] and all(len(t.y) >= 2 for t in ram.data)
    assert len(runs_tab.overlay([a.name], root).data) == 1  # loss, as before
