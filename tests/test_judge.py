"""The pairwise judge: both orders asked, position bias cancelled, outcomes and rates counted right, the
prompt editable; a real model judges in the slow test."""

from __future__ import annotations

import json

import pytest

from studio import judge
from studio.config import ConfigError
from studio.evaluate import EvalItem
from tests.runfolders import make_run


class FixedJudge:
    """Answers from a table keyed by (answer shown as A, answer shown as B); records every prompt it read."""

    def __init__(self, table: dict):
        self.table, self.prompts = table, []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        a = prompt.split("Answer A:\n")[1].split("\n")[0]
        b = prompt.split("Answer B:\n")[1].split("\n")[0]
        return self.table[(a, b)]


def test_parse_verdict():
    assert judge.parse_verdict("A: it is right").winner == "A"
    assert judge.parse_verdict("A: it is right").reason == "it is right"
    assert judge.parse_verdict("\n  B - shorter and true\nmore").winner == "B"
    assert judge.parse_verdict("This is a fine answer, but B is right").winner == "B"  # "a" is an article
    assert judge.parse_verdict("Tie: both fine").winner == "tie"
    got = judge.parse_verdict("I cannot decide")
    assert got.winner is None and got.reason == "I cannot decide"


def test_both_orders_and_the_aggregate():
    fixed = FixedJudge({
        ("good", "bad"): "A: correct", ("bad", "good"): "B: correct",        # consistent: tuned wins
        ("meh", "great"): "B: better", ("great", "meh"): "A: better",        # consistent: tuned loses
        ("x1", "y1"): "A: first is best", ("y1", "x1"): "A: first is best",  # position bias only: a tie
        ("x2", "y2"): "tie: same", ("y2", "x2"): "A: hmm",                   # inconsistent: a tie
        ("x3", "y3"): "no idea", ("y3", "x3"): "no idea",                    # no verdict: a tie
    })
    report = judge.compare(fixed, ["p1", "p2", "p3", "p4", "p5"], ["good", "meh", "x1", "x2", "x3"],
                           ["bad", "great", "y1", "y2", "y3"], judge_name="fixed")
    assert [r["outcome"] for r in report.rows] == ["win", "loss", "tie", "tie", "tie"]
    assert report.rates() == {"win": 0.2, "tie": 0.6, "loss": 0.2}
    assert len(fixed.prompts) == 10  # two readings per pair
    first, second = fixed.prompts[0], fixed.prompts[1]
    assert first.index("good") < first.index("bad") and second.index("bad") < second.index("good")
    assert report.rows[0]["verdicts"][0]["reason"] == "correct"
    assert "win 20%, tie 60%, loss 20% over 5 prompts" in report.table()


def test_the_prompt_is_editable_and_checked():
    fixed = FixedJudge({("a1", "b1"): "A", ("b1", "a1"): "B"})
    mine = "Q: {question}\nAnswer A:\n{answer_a}\nAnswer B:\n{answer_b}\nBetter? {not a slot}"
    report = judge.compare(fixed, ["what"], ["a1"], ["b1"], template=mine)
    assert fixed.prompts[0].startswith("Q: what\n") and fixed.prompts[0].endswith("{not a slot}")
    assert report.template == mine and report.rows[0]["outcome"] == "win"
    with pytest.raises(ConfigError, match=r"lacks \{answer_b\}"):
        judge.compare(fixed, ["what"], ["a1"], ["b1"], template="{question} {answer_a}")


def test_cli_judge_with_the_base_as_judge(tmp_path, tiny_dirs, capsys):
    from studio.cli import main

    run = make_run(tmp_path, tiny_dirs["llama"], "lora", scale=0.5)
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    assert main(["judge", str(run), "--prompts", str(prompts), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "tuned vs base (judge: the base model)" in out
    saved = json.loads((run / judge.JUDGE_FILE).read_text())
    assert len(saved["rows"]) == 1 and all(len(r["verdicts"]) == 2 for r in saved["rows"])
    assert sum(saved["rates"].values()) == pytest.approx(1.0)
    assert main(["judge", str(run), "--prompts", str(prompts), "--judge", str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_embedded_model_judges(tmp_path):
    from studio import models

    run = make_run(tmp_path, models.embedded_dir(), "lora", knobs={"targets": ["attention"]}, scale=0.1)
    items = [EvalItem("What is the capital of France?"), EvalItem("Name a primary colour.")]
    report = judge.judge_run(run, items, judge=str(models.embedded_dir()), max_new_tokens=24)
    assert len(report.rows) == 2 and all(len(r["verdicts"]) == 2 for r in report.rows)
    verdicts = [v for r in report.rows for v in r["verdicts"]]
    assert all(v["raw"].strip() for v in verdicts)  # the model replied every time
    assert sum(report.rates().values()) == pytest.approx(1.0)


def test_judge_panel_handler(tmp_path, tiny_dirs):
    from studio.ui import bench_panel, chat_panes, state

    state.configure(runs_root=tmp_path / "runs")
    state.get().chat, state.get().chat_key = None, None
    try:
        run = make_run(tmp_path / "runs", tiny_dirs["llama"], "judged", scale=0.5)
        mine = judge.DEFAULT_PROMPT.replace("You compare", "Compare")
        table, line = bench_panel.judge_answers("hello", "base", mine, str(run), [], opener=chat_panes.open_panes,
                                                max_new_tokens=4)
        assert list(table.columns)[:4] == ["prompt", "tuned answer", "other answer", "outcome for tuned"]
        assert len(table) == 1 and table["outcome for tuned"][0] in ("win", "tie", "loss")
        assert "judge: the base model" in line and "win" in line
        assert json.loads((run / judge.JUDGE_FILE).read_text())["template"] == mine  # the edited prompt was used
        _, line = bench_panel.judge_answers("hello", "base", "no slots", str(run), [], opener=chat_panes.open_panes)
        assert line.startswith("**Cannot judge:** the judge prompt lacks {question}")
    finally:
        state.get().chat, state.get().chat_key = None, None
