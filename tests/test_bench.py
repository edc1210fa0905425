"""Benchmarks through lm-evaluation-harness: the shipped local tasks on base and tuned from one copy of the
weights give the harness's own numbers; a hub task offline is one line; the CLI prints the table."""

from __future__ import annotations

import json

import pytest

from studio import bench
from studio.config import ConfigError
from tests.runfolders import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dirs):
    return make_run(tmp_path_factory.mktemp("bench"), tiny_dirs["llama"], "lora", scale=0.5)


def _direct(model, tokenizer, task: str, limit: int) -> dict:
    """The harness run straight on a model, as its own documentation shows, with the shipped task YAML."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    cfg = bench.task_config(bench.PRESET_TASKS / f"{task}.yaml")
    out = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8), tasks=[cfg],
                                  limit=limit, task_manager=TaskManager(include_defaults=False), log_samples=False)
    return out["results"][task]


def test_shipped_tasks_are_found_with_local_data():
    shipped = bench.local_tasks()
    assert set(shipped) >= {"studio_mc", "studio_gen"}
    for path in shipped.values():
        cfg = bench.task_config(path)
        assert all(f.startswith("/") for f in cfg["dataset_kwargs"]["data_files"].values())


def test_base_and_tuned_from_one_copy_give_the_harness_numbers(run, tiny_dirs, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio import models

    loads = []
    real_load = models.load
    monkeypatch.setattr(models, "load", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    seen = []
    report = bench.bench_run(run, ["studio_mc"], limit=6, progress=lambda f, text: seen.append(f))
    assert len(loads) == 1  # the base weights were loaded once, for both models
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) == 3

    tok = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    want_base = _direct(base, tok, "studio_mc", 6)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]), str(run / "adapter"))
    want_tuned = _direct(tuned.eval(), tok, "studio_mc", 6)
    for label, want in (("base", want_base), ("tuned", want_tuned)):
        for metric in ("acc", "acc_norm"):
            got = report.get(label, "studio_mc", metric)
            assert got.value == pytest.approx(want[f"{metric},none"])
            assert got.stderr == pytest.approx(want[f"{metric}_stderr,none"]) and got.n == 6
    # the adapter changes the log-likelihoods, so the harness's per-choice picks differ somewhere
    assert want_base != want_tuned
    saved = json.loads((run / bench.BENCH_FILE).read_text())
    assert saved["models"] == ["base", "tuned"] and len(saved["scores"]) == 4


def test_hub_task_offline_is_one_line(run, monkeypatch, capsys):
    from studio.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        bench.resolve_tasks(["hellaswag"])
    assert len(err.value.problems) == 1 and "hellaswag" in err.value.problems[0] and "hub" in err.value.problems[0]
    assert main(["bench", str(run), "--tasks", "hellaswag"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: hellaswag: not a local task")


def test_bad_task_yaml_and_missing_data_are_lines(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("task: mine\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: nope.jsonl\n")
    with pytest.raises(ConfigError, match="nope.jsonl does not exist"):
        bench.resolve_tasks([str(bad)])
    (tmp_path / "u.yaml").write_text("just: words\n")
    with pytest.raises(ConfigError, match="no 'task: NAME'"):
        bench.resolve_tasks([str(tmp_path / "u.yaml")])


@pytest.fixture
def panel_root(tmp_path):
    """A runs folder for the Chat tab's handlers, and no chat engine before or after."""
    from studio.ui import state

    root = tmp_path / "runs"
    state.configure(runs_root=root)
    state.get().chat, state.get().chat_key = None, None
    yield root
    state.get().chat, state.get().chat_key = None, None


def test_benchmarks_panel_table_chart_and_one_line_errors(panel_root, tiny_dirs):
    from studio.ui import bench_panel, chat_panes, state

    run = make_run(panel_root, tiny_dirs["llama"], "panel", scale=0.5)
    steps = []
    table, fig, summary = bench_panel.run_benchmarks(["studio_mc"], "", 4, str(run), [], opener=chat_panes.open_panes,
                                                     progress=lambda f, desc="": steps.append(desc))
    assert list(table.columns) == ["task", "metric", "base", "tuned"] and list(table["metric"]) == ["acc", "acc_norm"]
    report = bench.BenchReport.load(run / bench.BENCH_FILE)
    assert table["tuned"][0] == f"{report.get('tuned', 'studio_mc', 'acc').value:.3f} ± " \
                                f"{report.get('tuned', 'studio_mc', 'acc').stderr:.3f}"
    assert [t.name for t in fig.data] == ["base", "tuned"] and len(fig.data[1].error_y.array) == 2
    assert "4 examples per task" in summary and steps[-1] == "done"
    assert state.get().chat.adapters() == ["panel"]  # it ran on the chat's own engine
    _, _, line = bench_panel.run_benchmarks([], "hellaswag", 4, str(run), [], opener=chat_panes.open_panes,
                                            progress=lambda *a, **k: None)
    assert line.startswith("**Cannot benchmark:** hellaswag: not a local task") and "\n" not in line
    _, _, line = bench_panel.run_benchmarks(["studio_mc"], "", 4, None, [], opener=chat_panes.open_panes)
    assert line.startswith("Pick a tuned run")
    quiet = dict(opener=chat_panes.open_panes, progress=lambda *a, **k: None)
    _, _, line = bench_panel.run_benchmarks(["studio_mc"], "", 4, str(panel_root.parent), [], **quiet)
    assert "not a run in the runs folder" in line  # a typed path outside the runs folder is not read
    _, _, line = bench_panel.run_benchmarks([], "/etc/task.yaml", 4, str(run), [], **quiet)
    assert line.startswith("**Cannot benchmark:** task file: /etc/task.yaml is outside the folders")
