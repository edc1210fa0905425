"""The Train tab's rewards panel without a browser: building the reward list (add with its kind's settings,
refuse a bad one in one line, remove by number), the list going into the RunConfig through the form, and
the live view (reward curves, latest answers) read from a GRPO run's events; and the Data tab's preview of
prompt-only rows (counts, the column the rewards check, the loader's reason when they cannot be read)."""

from __future__ import annotations

import json

import gradio as gr

from studio import validation
from studio.run_log import RunLog
from studio.ui import rewards_panel
from studio.ui.form import Form


def test_add_remove_and_refuse_rewards():
    items, msg = rewards_panel.add_reward([], "match", {"column": "answer", "extract": r"####\s*(.+)",
                                                        "mode": "number", "tolerance": 0.5, "weight": 2.0,
                                                        "pattern": "ignored", "words": "x"})
    assert items == [{"kind": "match", "column": "answer", "extract": r"####\s*(.+)", "mode": "number",
                      "tolerance": 0.5, "weight": 2.0}] and msg.startswith("added reward 1")
    items, _ = rewards_panel.add_reward(items, "contains", {"words": "because, so", "case_sensitive": False,
                                                            "weight": 0.5})
    assert items[1]["words"] == ["because", "so"]
    same, msg = rewards_panel.add_reward(items, "format", {"pattern": "(<a>", "weight": 1.0})
    assert same == items and msg.count("\n- ") == 1 and "not a valid regex" in msg
    same, msg = rewards_panel.add_reward(items, "length", {"min_tokens": 9.0, "max_tokens": 3.0, "weight": 1.0})
    assert same == items and "min_tokens 9 is above max_tokens 3" in msg
    left, msg = rewards_panel.remove_reward(items, 1)
    assert [i["kind"] for i in left] == ["contains"] and "removed reward 1" in msg
    assert rewards_panel.remove_reward(left, 5)[0] == left
    assert rewards_panel.kind_visibility("format") == [n in ("pattern", "weight") for n in rewards_panel._SETTINGS]


def test_the_list_goes_into_the_config_and_is_checked():
    items, _ = rewards_panel.add_reward([], "format", {"pattern": r"^\d+$", "weight": 1.0})
    with gr.Blocks():
        form = Form()
        form.add("train.objective", gr.Textbox("grpo"))
        form.add("train.micro_batch_size", gr.Number(4))
        panel = rewards_panel.build_rewards_panel(form)
    assert form.keys[-1] == "train.rewards" and form.components[-1] is panel.items
    cfg = form.to_config("grpo", 4, items)
    assert cfg.train.rewards == items and validation.problems(cfg) == []
    assert form.from_config(cfg)[-1] == items


class _Job:
    name = "grpo-run"

    def __init__(self):
        self.log = RunLog("grpo-run")

    def events(self, since=0):
        return self.log.events(since)


def test_live_view_reads_reward_rows_and_samples():
    job = _Job()
    fig, rows, headers = rewards_panel.reward_view(job)
    assert rows == [] and len(fig.data) == 0
    job.log.event("log", step=1, loss=0.1, reward=0.5, reward_match=0.25, reward_format=0.5, kl=0.01)
    job.log.event("samples", step=1, rows=[{"prompt": "q", "answer": "7", "match": 1.0, "format": 1.0,
                                            "total": 2.0}])
    job.log.event("log", step=2, loss=0.1, reward=0.75, reward_match=0.5, reward_format=0.5, kl=0.02)
    fig, rows, headers = rewards_panel.reward_view(job)
    names = [t.name for t in fig.data]
    assert names == ["total", "format", "match", "KL"]
    assert list(fig.data[0].y) == [0.5, 0.75] and list(fig.data[3].y) == [0.01, 0.02]
    assert headers == ["prompt", "answer", "total", "match", "format"] and rows == [["q", "7", 2.0, 1.0, 1.0]]


def test_data_tab_previews_prompt_rows_with_counts(tiny_dirs, tmp_path):
    from studio.config import ObjectiveSpec, RunConfig
    from studio.ui import data_tab

    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "What is 1 + 1?", "answer": "2"}, {"prompt": "What is 2 + 2?", "answer": "4"},
            {"prompt": "", "answer": "0"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "data": {"path": str(path)},
                               "train": {"rewards": [{"kind": "match", "column": "answer"}]}})
    summary, body, _ = data_tab.preview_view(cfg, 2)
    assert summary.startswith("**Format:** prompts") and "**rows:** 2" in summary and "**skipped:** 1" in summary
    assert "What is 1 + 1?" in body and "What is 2 + 2?" in body and "(what the rewards check)" in body
    cfg.train.objective, cfg.train.rewards = ObjectiveSpec("grpo"), [{"kind": "match", "column": "solution"}]
    summary, body, _ = data_tab.preview_view(cfg, 2)
    assert summary.count("\n") == 0 and "read the column 'solution', which the data lacks" in summary and body == ""
