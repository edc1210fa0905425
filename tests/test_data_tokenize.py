"""Rendering and loss masks, token by token; build() and preview() end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_tokenizer
from studio.config import DataSpec, ModelSpec, RunConfig, TrainSpec
from studio.data import IGNORE, DataError, build, preview, tokenize_rows

CONVO = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"},
         {"role": "user", "content": "q"}, {"role": "assistant", "content": "a b"}]


def _ids(tok, pieces: list[str]) -> list[int]:
    return tok.convert_tokens_to_ids(pieces)


def _expected_tiny(tok):
    """The tiny tokenizer is one token per character (plus specials): spell out every token and its mask."""
    spelled = [("<|system|>", 0), ("S", 0), ("<|end|>", 0), ("<|user|>", 0), ("h", 0), ("i", 0), ("<|end|>", 0),
               ("<|assistant|>", 0), ("o", 1), ("k", 1), ("<|end|>", 1), ("<|user|>", 0), ("q", 0), ("<|end|>", 0),
               ("<|assistant|>", 0), ("a", 1), (" ", 1), ("b", 1), ("<|end|>", 1)]
    ids = _ids(tok, [p for p, _ in spelled])
    return ids, [i if trained else IGNORE for i, (_, trained) in zip(ids, spelled)]


def test_mask_token_by_token_tiny():
    tok = tiny_tokenizer()
    out = tokenize_rows([{"messages": CONVO}], tok, max_len=100)
    ids, labels = _expected_tiny(tok)
    assert out.examples[0]["input_ids"] == ids
    assert out.examples[0]["labels"] == labels


def test_train_on_all_tiny():
    tok = tiny_tokenizer()
    ex = tokenize_rows([{"messages": CONVO}], tok, max_len=100, train_on="all").examples[0]
    assert ex["labels"] == [IGNORE] + ex["input_ids"][1:]  # the first token is never predicted


def test_text_rows_train_everything_and_end_with_eos():
    tok = tiny_tokenizer()
    ex = tokenize_rows([{"text": "abc"}], tok, max_len=100).examples[0]
    assert ex["input_ids"] == _ids(tok, ["a", "b", "c", "<|end|>"])
    assert ex["labels"] == [IGNORE] + ex["input_ids"][1:]


def test_fallback_template_for_tokenizers_without_one():
    tok = tiny_tokenizer()
    tok.chat_template = None
    ex = tokenize_rows([{"messages": CONVO[1:3]}], tok, max_len=200).examples[0]
    unk = lambda text: text.replace("\n", "<unk>")  # noqa: E731  (the tiny vocabulary has no newline)
    assert tok.decode(ex["input_ids"]) == unk("### User:\nhi\n\n### Assistant:\nok<|end|>\n\n")
    trained = [t for t, l in zip(ex["input_ids"], ex["labels"]) if l != IGNORE]
    assert tok.decode(trained) == unk("ok<|end|>\n\n")


def test_template_that_rewrites_earlier_turns_trains_the_last_answer():
    tok = tiny_tokenizer()
    # like reasoning templates that drop earlier answers' thoughts: earlier turns render differently
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<|assistant|>-<|end|>"
                         "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    out = tokenize_rows([{"messages": CONVO}], tok, max_len=200)
    ex = out.examples[0]
    assert out.last_turn_only == 1
    assert tok.decode([t for t, l in zip(ex["input_ids"], ex["labels"]) if l != IGNORE]) == "a b<|end|>"


def test_template_that_refuses_a_row_skips_it():
    tok = tiny_tokenizer()
    tok.chat_template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('must start with user') }}{% endif %}x"
    out = tokenize_rows([{"messages": CONVO}], tok, max_len=200)
    assert not out.examples and "must start with user" in out.skipped[0][1]


def test_truncation_counts_and_skips_rows_with_no_answer_left():
    tok = tiny_tokenizer()
    long_answer = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 50}]
    long_prompt = [{"role": "user", "content": "y" * 50}, {"role": "assistant", "content": "ok"}]
    out = tokenize_rows([{"messages": long_answer}, {"messages": long_prompt}], tok, max_len=20)
    assert out.truncated == 1 and len(out.examples[0]["input_ids"]) == 20
    assert out.lengths == [56]  # <|user|> h i <|end|> <|assistant|>, 50 x, <|end|>: measured before cutting
    assert out.skipped == [(1, "no answer tokens within max_seq_len")]


@pytest.fixture(scope="module")
def smol():
    from studio.models import load_tokenizer

    return load_tokenizer(ModelSpec())


def test_mask_token_by_token_smollm2(smol):
    """Independent derivation: the tokens of each prompt render and each answer render are prefixes of the
    whole conversation's tokens; exactly the tokens between them are trained."""
    out = tokenize_rows([{"messages": CONVO}], smol, max_len=512)
    ex = out.examples[0]
    full = smol.apply_chat_template(CONVO, tokenize=False)
    whole = smol(full, add_special_tokens=False)["input_ids"]
    assert ex["input_ids"] == whole
    expected = [IGNORE] * len(whole)
    for i, m in enumerate(CONVO):
        if m["role"] != "assistant":
            continue
        prompt = smol(smol.apply_chat_template(CONVO[:i], tokenize=False, add_generation_prompt=True),
                      add_special_tokens=False)["input_ids"]
        upto = smol(smol.apply_chat_template(CONVO[: i + 1], tokenize=False), add_special_tokens=False)["input_ids"]
        assert whole[: len(upto)] == upto and upto[: len(prompt)] == prompt
        expected[len(prompt): len(upto)] = upto[len(prompt):]
    assert ex["labels"] == expected
    trained = [t for t, l in zip(ex["input_ids"], ex["labels"]) if l != IGNORE]
    assert smol.decode(trained) == "ok<|im_end|>\na b<|im_end|>\n"


def test_batch_speed_smollm2(smol):
    import time

    rows = [{"messages": [{"role": "user", "content": f"question {i} " * 20},
                          {"role": "assistant", "content": f"answer {i} " * 40}]} for i in range(2000)]
    start = time.perf_counter()
    out = tokenize_rows(rows, smol, max_len=512)
    assert len(out.examples) == 2000
    assert time.perf_counter() - start < 15  # about 1 s here; a per-row Python tokenizer loop takes far longer


def _cfg(path: Path, **data) -> RunConfig:
    return RunConfig(data=DataSpec(path=str(path), **data), train=TrainSpec(max_seq_len=64, seed=3))


def _write(path: Path, n: int) -> Path:
    rows = [{"prompt": f"q{i}", "completion": f"answer {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_build_stats_and_unpacked_rows(tmp_path):
    tok = tiny_tokenizer()
    got = build(_cfg(_write(tmp_path / "d.jsonl", 10), packing=False), tok)
    s = got.stats
    assert (s.rows, s.eval_rows, s.skipped, s.truncated, s.packing, s["format"]) == (10, 0, 0, 0, False, "prompt_completion")
    assert s.real_tokens == sum(len(r["input_ids"]) for r in got.train) == sum(s.lengths)
    assert s.trained_tokens == sum(sum(l != IGNORE for l in r["labels"]) for r in got.train)
    assert all("position_ids" not in r for r in got.train)
    assert json.dumps(s.to_dict())


def test_validation_fraction_is_seeded_and_disjoint(tmp_path):
    tok, path = tiny_tokenizer(), _write(tmp_path / "d.jsonl", 20)
    a = build(_cfg(path, packing=False, val_fraction=0.25), tok)
    b = build(_cfg(path, packing=False, val_fraction=0.25), tok)
    assert (a.stats.rows, a.stats.eval_rows) == (15, 5)
    assert a.eval == b.eval
    texts = lambda rows: {tuple(r["input_ids"]) for r in rows}  # noqa: E731
    assert not texts(a.train) & texts(a.eval)


def test_validation_file(tmp_path):
    tok = tiny_tokenizer()
    got = build(_cfg(_write(tmp_path / "d.jsonl", 8), val_path=str(_write(tmp_path / "v.jsonl", 3))), tok)
    assert got.stats.eval_rows == 3 and got.eval and all("position_ids" in r for r in got.eval)


def test_build_fails_clearly_when_nothing_is_trainable(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "p" * 100, "completion": "c"}) + "\n")
    with pytest.raises(DataError, match="no example has tokens to train on"):
        build(_cfg(path), tiny_tokenizer())


def test_preview_marks_trained_spans_and_lengths(tmp_path):
    tok = tiny_tokenizer()
    view = preview(_cfg(_write(tmp_path / "d.jsonl", 6)), tok, n=2)
    assert len(view.examples) == 2 and view.rows == 6 and len(view.lengths) == 6
    assert view.examples[0] == [("<|user|>q0<|end|><|assistant|>", False), ("answer 0<|end|>", True)]
    assert view.over_max == 0 and view.max_seq_len == 64


def test_preview_counts_rows_over_the_limit(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "c" * 100}) + "\n")
    view = preview(_cfg(path), tiny_tokenizer())
    assert view.over_max == 1 and view.lengths[0] > 64


def test_tokenizer_with_truncation_in_its_file_is_not_cut_short():
    # some tokenizer.json files enable truncation; the studio's own max_seq_len must be the only cut
    tok = tiny_tokenizer()
    tok.backend_tokenizer.enable_truncation(5)
    ids, labels = _expected_tiny(tok)
    ex = tokenize_rows([{"messages": CONVO}], tok, max_len=100).examples[0]
    assert ex["input_ids"] == ids and ex["labels"] == labels
