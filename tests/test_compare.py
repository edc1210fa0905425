"""Compare runs: only the settings that differ, with how each run ended."""

from __future__ import annotations

import json

from studio import compare
from studio.ui import runs_tab
from tests.test_training import make_cfg, run_job


def test_only_differing_settings_and_the_results(tiny_dirs, chat_file, tmp_path):
    a = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=2, run_name="a", sample_hardware=False))
    b = run_job(make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=2, run_name="b", learning_rate=3e-3,
                         sample_hardware=False))
    (b.run_dir / "eval.jsonl").write_text(json.dumps({"summary": {"tuned": {"rouge_l": 0.5}, "prompts": 3}}) + "\n")
    headers, rows = compare.compare_runs([a.run_dir, b.run_dir])
    assert headers == ["run", "train.learning_rate", "final loss", "eval loss", "rouge_l (tuned)", "train s"]
    assert rows[0][:2] == ["a", 1e-2] and rows[1][:2] == ["b", 3e-3]
    assert rows[1][4] == 0.5 and rows[0][4] is None
    assert all(isinstance(r[2], float) and r[5] > 0 for r in rows)
    shown = runs_tab.compare_table(["a", "b"], str(tmp_path / "runs"))
    assert shown["headers"] == headers and shown["data"][0][4] == "–"
