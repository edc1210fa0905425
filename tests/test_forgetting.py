"""The forgetting check: train.eval_after scores base and tuned when a run finishes, into the run folder and
the Runs tab; a failing check is recorded beside the good result."""

from __future__ import annotations

import json

import pytest

from studio import forgetting
from studio.config import RunConfig


@pytest.fixture(scope="module")
def checked_run(tiny_dirs, tmp_path_factory):
    """A 2-step tiny run trained by ``python -m studio train`` with train.eval_after set."""
    from studio.cli import main

    root = tmp_path_factory.mktemp("forget")
    data = root / "chat.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                       {"role": "assistant", "content": f"a{i}"}]}) for i in range(8)))
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4},
                               "data": {"path": str(data), "packing": False},
                               "train": {"max_steps": 2, "micro_batch_size": 2, "max_seq_len": 64, "precision": "fp32",
                                         "learning_rate": 0.05, "run_name": "after", "output_dir": str(root / "runs"),
                                         "eval_after": ["general", "studio_mc"]}})
    cfg.save(root / "preset.yaml")
    assert main(["train", str(root / "preset.yaml"), "--quiet"]) == 0
    return root / "runs" / "after"


def test_eval_after_lands_in_the_run_folder(checked_run):
    result = json.loads((checked_run / forgetting.AFTER_FILE).read_text())
    assert result["asked"] == ["general", "studio_mc"]
    general = result["general"]
    assert general["prompts"] == 16 and len(general["rows"]) == 16
    assert set(general["base"]) == set(general["tuned"]) == {"rouge1", "rouge2", "rougeL", "bleu", "chrf",
                                                             "exact_match", "contains"}
    assert any(r["answers"]["base"] != r["answers"]["tuned"] for r in general["rows"])  # the adapter was on
    models = {(s["model"], s["metric"]) for s in result["bench"]}
    assert models == {("base", "acc"), ("base", "acc_norm"), ("tuned", "acc"), ("tuned", "acc_norm")}
    rows = forgetting.changes(result)
    assert [r["what"] for r in rows] == ["general prompts", "general prompts", "studio_mc", "studio_mc"]
    assert all(r["change"] == pytest.approx(r["tuned"] - r["base"]) for r in rows)
    assert len(result["lines"]) == 4 and "studio_mc acc:" in result["lines"][2]
    log = (checked_run / "train.log").read_text()
    assert "eval_after: general prompts contains answer:" in log


def test_runs_tab_shows_the_changes_beside_the_loss(checked_run):
    from studio.ui import runs_tab

    row = runs_tab.runs_table(str(checked_run.parent))[0]
    cell = row[runs_tab.COLUMNS.index("after tuning (tuned - base)")]
    assert runs_tab.COLUMNS.index("after tuning (tuned - base)") == runs_tab.COLUMNS.index("eval loss") + 1
    result = forgetting.read(checked_run)
    want = forgetting.changes(result)[0]
    assert cell.startswith(f"general prompts contains answer {want['change']:+.3f}") and "studio_mc acc" in cell


def test_a_failed_check_is_recorded_not_raised(tmp_path, monkeypatch):
    cfg = RunConfig.from_dict({"train": {"eval_after": ["general"]}})
    monkeypatch.setattr(forgetting, "run_after", lambda *a, **k: (_ for _ in ()).throw(MemoryError("no room")))
    lines = []
    forgetting.after_training(tmp_path, cfg, lines.append)
    assert forgetting.read(tmp_path)["error"] == "MemoryError: no room"
    assert lines == ["eval_after: eval_after failed: MemoryError: no room"]
    assert forgetting.short(forgetting.read(tmp_path)).startswith("failed: MemoryError")
    forgetting.after_training(tmp_path / "none", RunConfig(), lines.append)  # not asked: nothing happens
    assert forgetting.read(tmp_path / "none") is None and forgetting.short(None) == "–"


def test_eval_after_names_are_checked():
    from studio.config import ConfigError

    with pytest.raises(ConfigError, match="'hellaswag' is not one of general, studio_mc, studio_gen"):
        RunConfig.from_dict({"train": {"eval_after": ["general", "hellaswag"]}})


@pytest.mark.slow
def test_quickstart_what_the_identity_tuning_cost(tmp_path):
    """The quickstart with train.eval_after on every shipped check (docs/benchmarks.md records the output)."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from studio import bench, metrics
    from studio.cli import main

    root = Path(__file__).resolve().parent.parent
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "studio", "train", "presets/quickstart.yaml", "--output", str(tmp_path),
                          "--quiet", "--set", "train.eval_after=[general, studio_mc, studio_gen]"], cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=2400)
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    state = json.loads((run_dir / "state.json").read_text())
    steps = RunConfig.load(root / "presets" / "quickstart.yaml").train.max_steps
    assert state["status"] == "done" and state["step"] == state["total_steps"] == steps  # the preset's own steps
    print(f"\ntrain + eval_after: {time.perf_counter() - started:.0f} s wall, {state['train_seconds']:.0f} s "
          f"training, {state['total_steps']} steps, final loss {state['final_loss']:.3f}")
    result = forgetting.read(run_dir)
    print("\n".join(result["lines"]))
    print("| metric | base | tuned | change |")  # every general-prompt figure (the lines show two)
    for k in metrics.METRICS:
        b, t = result["general"]["base"][k], result["general"]["tuned"][k]
        print(f"| {metrics.LABELS[k]} | {b:.3f} | {t:.3f} | {t - b:+.3f} |")
    for s in result["bench"]:
        print(f"{s['model']} {s['task']} {s['metric']}: {s['value']:.3f} ± {s['stderr']:.3f} (n={s['n']})")
    for row in result["general"]["rows"]:
        print(f"{row['prompt']!r}: base {row['answers']['base'][:60]!r} | tuned {row['answers']['tuned'][:60]!r}")
    general = {r["metric"]: r for r in forgetting.changes(result) if r["what"] == "general prompts"}
    # the preset's steps on an identity set overfit: the tuned model answers "I am Quill..." to general questions too
    assert general["contains answer"]["change"] < 0 and general["ROUGE-L"]["change"] < 0

    started = time.perf_counter()
    assert main(["bench", str(run_dir), "--tasks", "studio_mc", "studio_gen"]) == 0
    print(f"bench: {time.perf_counter() - started:.0f} s wall")
    report = bench.BenchReport.load(run_dir / bench.BENCH_FILE)
    for s in result["bench"]:  # the same harness numbers as the check after training (greedy, no sampling)
        assert report.get(s["model"], s["task"], s["metric"]).value == pytest.approx(s["value"])
    assert report.get("base", "studio_mc", "acc").n == 24 and report.get("base", "studio_gen", "exact_match (strip)")
