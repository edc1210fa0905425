"""Prompt-set evaluation: prompt sources, the eval table and its library metrics, loss, CLI."""

from __future__ import annotations

import json
import math

import pytest

from studio import metrics
from studio.config import ConfigError
from studio.evaluate import EvalItem, evaluate_run, items_from_rows, load_prompts, mean_loss, prompts_from_column
from tests.runfolders import make_run

CHAT_ROWS = [
    {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i} ok"}]}
    for i in range(6)
]


def test_prompt_sources(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    assert [i.prompt for i in load_prompts(txt)] == ["first prompt", "second prompt"]
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps({"prompt": "hi", "reference": "hello"}) + "\n" + json.dumps({"prompt": "x"}) + "\n")
    assert [(i.prompt, i.reference) for i in load_prompts(pairs)] == [("hi", "hello"), ("x", None)]
    chats = tmp_path / "c.jsonl"
    chats.write_text("\n".join(json.dumps(r) for r in CHAT_ROWS))
    items = load_prompts(chats)
    assert items[0].reference == "answer 0 ok" and items[0].prompt_text() == "question 0"
    assert items_from_rows([{"text": "plain"}]) == []
    with pytest.raises(ConfigError, match="no such file"):
        load_prompts(tmp_path / "missing.txt")


def test_txt_prompt_files_read_references_like_typed_prompts(tmp_path):
    from studio.evaluate import parse_prompts

    txt = tmp_path / "p.txt"
    text = "Who are you?\n\n  What is LoRA? => A low-rank adapter. \n=> no prompt\n"
    txt.write_text(text)
    read = [(i.prompt, i.reference) for i in load_prompts(txt)]
    assert read == [(i.prompt, i.reference) for i in parse_prompts(text)]  # one reader for files and typed text
    assert read == [("Who are you?", None), ("What is LoRA?", "A low-rank adapter.")]


def test_mean_loss_matches_the_model(tiny_dirs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio import data

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    tok = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    ex = data.tokenize_rows(CHAT_ROWS[:1], tok, max_len=512).examples[0]
    with torch.no_grad():
        want = model(input_ids=torch.tensor([ex["input_ids"]]), labels=torch.tensor([ex["labels"]])).loss
    assert mean_loss(model, tok, CHAT_ROWS[:1]) == pytest.approx(float(want), rel=1e-5)


@pytest.fixture
def run(tmp_path, tiny_dirs):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in CHAT_ROWS))
    return make_run(tmp_path, tiny_dirs["llama"], "lora", data={"path": str(path), "val_fraction": 0.34})


def test_eval_table_from_heldout_split(run):
    report = evaluate_run(run, max_new_tokens=6)
    assert report.panes == ["base", "tuned"] and len(report.rows) == 2  # 6 rows * 0.34 held out
    row = report.rows[0]
    assert set(row["answers"]) == {"base", "tuned"} and set(row["scores"]) == {"base", "tuned"}
    assert row["scores"]["tuned"] == metrics.score(row["answers"]["tuned"], row["reference"])
    base, tuned = report.summary["base"], report.summary["tuned"]
    assert base["loss"] != tuned["loss"] and tuned["perplexity"] == pytest.approx(math.exp(tuned["loss"]))
    assert report.summary["loss_on"] == "the held-out split"
    lines = (run / "eval.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "summary" in json.loads(lines[-1])
    table = report.table()
    assert "base" in table and "tuned" in table and "perplexity" in table


def test_eval_typed_prompts_without_references(run):
    report = evaluate_run(run, items=[EvalItem("hello"), EvalItem("who are you")], max_new_tokens=4, save=False)
    assert len(report.rows) == 2 and "scores" not in report.rows[0]
    assert report.summary["base"]["rougeL"] is None and report.summary["base"]["loss"] is not None


def test_cli_eval(run, tmp_path, capsys):
    from studio.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    assert main(["eval", str(run), "--prompts", str(prompts), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "[1] hello" in out and "eval.jsonl" in out
    assert main(["eval", str(run), "--prompts", str(tmp_path / "nope.txt")]) == 2


def test_prompts_from_a_dataset_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,gold\nwhat is up,nothing\nhow are you,fine\n")
    items = prompts_from_column(str(path), "question", reference="gold")
    assert [(i.prompt, i.reference) for i in items] == [("what is up", "nothing"), ("how are you", "fine")]
    assert len(prompts_from_column(str(path), "question", limit=1)) == 1
    with pytest.raises(ConfigError, match="no column 'nope'"):
        prompts_from_column(str(path), "nope")


@pytest.mark.slow
def test_eval_on_the_embedded_model(tmp_path):
    from studio import models

    run = make_run(tmp_path, models.embedded_dir(), "lora", knobs={"targets": ["attention"]}, scale=0.1)
    items = [EvalItem("Who are you?", "I am a helpful assistant."), EvalItem("What is 2+2?", "4")]
    report = evaluate_run(run, items=items, max_new_tokens=16)
    assert all(r["answers"]["base"].strip() for r in report.rows)
    assert report.summary["loss_on"] == "the prompt/reference pairs"
    assert 1.0 < report.summary["base"]["perplexity"] < 1e6
