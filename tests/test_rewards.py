"""The built-in rewards on hand-made answers: what each scores, malformed answers, regexes with groups, the
TRL reward functions they become (named, weighted, columns read), and a reward model folder."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

from studio import grpo_train, rewards


@pytest.mark.parametrize("answer, target, extract, mode, tol, want", [
    ("<answer> Paris. </answer>", "paris", r"<answer>(.*)</answer>", "exact", 0, 1.0),
    ("<answer>Lyon</answer>", "Paris", r"<answer>(.*)</answer>", "exact", 0, 0.0),
    ("Paris, I think", "Paris", r"<answer>(.*)</answer>", "exact", 0, 0.0),      # no tags: the regex finds nothing
    ("<answer>Paris", "Paris", r"<answer>(.*)</answer>", "exact", 0, 0.0),        # unclosed tag
    ("so 3 + 4 = 7\n#### 7", "7", r"####\s*(.+)", "number", 0, 1.0),
    ("#### 1,234.0", "1234", r"####\s*(.+)", "number", 0, 1.0),                   # thousands comma
    ("#### 7.04", "7", r"####\s*(.+)", "number", 0.05, 1.0),
    ("#### 7.2", "7", r"####\s*(.+)", "number", 0.05, 0.0),
    ("#### seven", "7", r"####\s*(.+)", "number", 0, 0.0),                       # no number at all
    ("first 3 then 12", "12", "", "number", 0, 1.0),                               # the last number counts
    ("A: 5 or B: 6", "6", r"A: (\d)|B: (\d)", "number", 0, 0.0),                   # first group that matched: 5
    ("B: 6", "6", r"A: (\d)|B: (\d)", "number", 0, 1.0),                           # the second group matched
    ("answer=42", "42", r"answer=\d+", "exact", 0, 0.0),                           # no group: the whole match
    ("answer=42", "answer=42", r"answer=\d+", "exact", 0, 1.0),
    ("", "x", "", "exact", 0, 0.0),
    ("anything", None, "", "exact", 0, 0.0),                                       # the row has no answer
])
def test_match(answer, target, extract, mode, tol, want):
    assert rewards.score_match(answer, target, extract_re=extract, mode=mode, tolerance=tol) == want


def test_format_length_contains_excludes():
    pattern = r"^<think>.+</think>\s*<answer>.+</answer>$"
    assert rewards.score_format("<think>a</think> <answer>b</answer>", pattern) == 1.0
    assert rewards.score_format("<think>a\nb</think>\n<answer>c</answer>", pattern) == 1.0  # dot spans lines
    assert rewards.score_format("<answer>b</answer>", pattern) == 0.0
    assert rewards.score_format("<think>a</think><answer>b</answer> trailing", pattern) == 0.0
    assert rewards.score_length(5, 2, 10) == 0.0
    assert rewards.score_length(2, 2, 10) == 0.0 and rewards.score_length(10, 2, 10) == 0.0
    assert rewards.score_length(15, 2, 10) == -0.5
    assert rewards.score_length(100, 2, 10) == -1.0  # capped
    assert rewards.score_length(0, 4, 10) == -1.0 and rewards.score_length(3, 4, 10) == -0.25
    assert rewards.score_contains("Because it rains.", ["because", "rain"]) == 0.5  # 'rain' is no whole word here
    assert rewards.score_contains("because rain", ["Because", "rain"], case_sensitive=True) == 0.5
    assert rewards.score_contains("", ["x"]) == 0.0
    assert rewards.score_excludes("I am sorry.", ["sorry"]) == 0.0
    assert rewards.score_excludes("No apology (sorry-free)", ["as an AI"]) == 1.0
    assert rewards.score_excludes("c++ rocks", ["c++"]) == 0.0  # phrases with symbols are found as written


def test_scorers_are_named_weighted_and_read_their_column():
    items = [{"kind": "match", "column": "sol", "extract": r"<a>(.*)</a>"},
             {"kind": "match", "column": "sol", "name": "again", "weight": 0.5},
             {"kind": "length", "min_tokens": 1, "max_tokens": 3, "weight": 2},
             {"kind": "format", "pattern": "<a>"}]
    assert rewards.names(items) == ["match", "again", "length", "format"]
    assert rewards.names([{"kind": "format"}, {"kind": "format"}]) == ["format", "format_2"]
    assert rewards.weights(items) == [1.0, 0.5, 2.0, 1.0] and rewards.columns_read(items) == ["sol"]
    board = rewards.SampleBoard(rewards.names(items), rewards.weights(items))
    funcs = rewards.scorers(items, board=board)
    assert [f.__name__ for f in funcs] == ["match", "again", "length", "format"]
    prompts = [[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]]
    completions = [[{"role": "assistant", "content": "<a>4</a>"}], [{"role": "assistant", "content": "5"}]]
    kw = {"sol": ["4", "5"], "trainer_state": None}
    scores = [f(prompts=prompts, completions=completions, completion_ids=[[1], [1, 2, 3, 4, 5]], **kw) for f in funcs]
    assert scores == [[1.0, 0.0], [0.0, 1.0], [0.0, -2 / 3], [1.0, 0.0]]
    rows = board.rows()
    assert rows[0]["prompt"] == "q1" and rows[0]["answer"] == "<a>4</a>"
    assert rows[1]["total"] == pytest.approx(0.5 * 1.0 + 2 * (-2 / 3), abs=1e-4)
    assert rewards.chart_values({"reward": 0.3, "kl": 0.01, "rewards/match/mean": 0.5, "rewards/match/std": 1,
                                 "loss": 1}) == {"reward": 0.3, "kl": 0.01, "reward_match": 0.5}


def test_a_reward_model_folder_scores_each_answer(tmp_path, tiny_dirs):
    cfg = LlamaConfig(vocab_size=260, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(cfg)
    tok = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    tok.pad_token = tok.pad_token or tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    item = {"kind": "model", "path": str(tmp_path / "rm")}
    assert rewards.check([item], lambda p: True) == []
    func = rewards.scorers([item], model_scorer=grpo_train.model_scorer("cpu"))[0]
    scores = func(prompts=["q ", "q "], completions=["good answer", "bad"])
    enc = tok(["q good answer", "q bad"], return_tensors="pt", padding=True)
    with torch.no_grad():
        want = model.eval()(**enc).logits[:, 0].tolist()
    assert scores == pytest.approx(want, abs=1e-5) and scores[0] != scores[1]
