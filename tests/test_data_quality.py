"""Data quality filters on fixed strings whose similarity is known: exact and near duplicates, length in
tokens, the counts and examples reported, and the one-line refusal when nothing is left."""

from __future__ import annotations

import json

import pytest

from studio import data
from studio.config import DataSpec, RunConfig
from studio.data import quality
from tests.conftest import tiny_tokenizer

A = "The quick brown fox jumps over the lazy dog near the old river bank this morning."
A_SPACED = "the QUICK brown fox  jumps over the lazy dog near the old river bank this morning."
B = "The quick brown fox jumps over the lazy cat near the old river bank this morning."  # one word changed
C = "Stock prices fell sharply on Tuesday after the central bank raised interest rates."


def _rows(*texts):
    return [{"messages": [{"role": "user", "content": "say it"}, {"role": "assistant", "content": t}]}
            for t in texts]


def _jaccard(x: str, y: str) -> float:
    a, b = quality.shingles(x), quality.shingles(y)
    return len(a & b) / len(a | b)


def test_the_strings_have_the_similarity_the_tests_rely_on():
    assert 0.8 < _jaccard(A, B) < 0.9 and _jaccard(A, C) < 0.15 and _jaccard(A, A_SPACED) == 1.0


def test_exact_duplicates_ignore_case_and_spacing():
    kept, dropped = quality.exact_duplicates(_rows(A, A_SPACED, B, C))
    assert [quality.row_text(r).split("\n")[1] for r in kept] == [A, B, C]
    assert dropped.dropped == 1 and dropped.examples[0].startswith("row 2 repeats row 1")


def test_near_duplicates_drop_the_close_copy_only():
    kept, dropped = quality.near_duplicates(_rows(A, B, C), threshold=0.7)
    assert [quality.row_text(r).split("\n")[1] for r in kept] == [A, C]
    assert dropped.dropped == 1 and "like row 1" in dropped.examples[0]
    kept, dropped = quality.near_duplicates(_rows(A, B, C), threshold=0.99)  # stricter than their similarity
    assert len(kept) == 3 and dropped.dropped == 0


def test_length_filter_counts_tokens():
    tok = tiny_tokenizer()  # one token per character
    rows = [{"text": "x" * n} for n in (3, 10, 40)]
    kept, dropped = quality.length_filter(rows, tok, min_tokens=5, max_tokens=20)
    assert kept == [{"text": "x" * 10}] and dropped.dropped == 2
    assert "3 tokens < 5" in dropped.examples[0] and "40 tokens > 20" in dropped.examples[1]


def test_apply_reports_each_filter_in_order():
    spec = DataSpec(dedup="near", near_threshold=0.7, max_tokens=200)
    kept, report = quality.apply(_rows(A, A_SPACED, B, C, "short"), spec, tiny_tokenizer())
    assert report.rows_in == 5 and report.rows_kept == len(kept) == 3
    assert [(f.name, f.dropped) for f in report.filters] == [("exact_duplicates", 1), ("near_duplicates", 1),
                                                             ("length", 0)]
    assert not quality.wanted(DataSpec())


def test_build_filters_from_the_config_and_refuses_an_empty_result(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": "q", "completion": t}) for t in (A, A, B, C)))
    cfg = RunConfig()
    cfg.data.path, cfg.data.dedup, cfg.data.packing = str(path), "exact", False
    prepared = data.build(cfg, tiny_tokenizer())
    assert prepared.stats.rows == 3 and prepared.stats.quality["filters"][0]["dropped"] == 1
    cfg.data.min_tokens = 5000
    with pytest.raises(data.DataError) as err:
        data.build(cfg, tiny_tokenizer())
    assert len(err.value.problems) == 1 and "left no rows of 4" in err.value.problems[0]


def test_settings_are_checked():
    cfg = RunConfig()
    cfg.data.dedup, cfg.data.near_threshold = "fuzzy", 1.5
    found = cfg.problems()
    assert any("data.dedup" in p for p in found) and any("data.near_threshold" in p for p in found)


def test_preview_shows_what_the_filters_drop(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": "q", "completion": t}) for t in (A, A, B, C)))
    cfg = RunConfig()
    cfg.data.path, cfg.data.dedup, cfg.data.near_threshold = str(path), "near", 0.7
    view = data.preview(cfg, tiny_tokenizer(), n=2)
    assert view.rows == 2 and view.quality[0].startswith("exact_duplicates: dropped 1 (e.g. row 2 repeats row 1")
    assert view.quality[1].startswith("near_duplicates: dropped 1")


def test_strictness_curve_trades_rows_for_diversity():
    rows = _rows(A, A_SPACED, B, C)
    points = quality.strictness_curve(rows, thresholds=(0.99, 0.7))
    assert [(p["filter"], p["rows"]) for p in points] == [("none", 4), ("exact", 3), ("near >= 0.99", 3),
                                                          ("near >= 0.7", 2)]
    assert points[0]["distinct_2"] < points[1]["distinct_2"] < points[3]["distinct_2"]  # copies repeat 2-grams
    assert quality.distinct_2([{"text": "a b a b"}]) == pytest.approx(2 / 3)


def test_the_data_tab_draws_the_strictness_chart():
    from studio.ui import data_tab

    cfg = RunConfig()  # the shipped identity set: 40 paraphrases of one answer
    fig = data_tab.strictness_view(cfg)
    bars, line = fig.data
    assert bars.y[0] == 40 and list(bars.y) == sorted(bars.y, reverse=True) and len(line.y) == len(bars.y)
    cfg.data.path = "/nonexistent/rows.jsonl"
    assert "Cannot read the data" in data_tab.strictness_view(cfg).layout.title.text
