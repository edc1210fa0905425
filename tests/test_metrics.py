"""Answer metrics: the libraries' own values on fixed strings, and the figures the hand-written ROUGE-L gave."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from studio import metrics

PAIRS = [("police kill the gunman", "police killed the gunman"),
         ("the cat was found under the bed", "the cat was under the bed"),
         ("The answer is Paris.", "Paris"),
         ("", "nothing here")]


def test_rouge_is_the_reference_implementation():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for cand, ref in PAIRS:
        want = scorer.score(ref, cand)
        assert metrics.rouge(cand, ref) == {k: want[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")}


def test_rouge_l_keeps_the_figures_of_lin_2004():
    # the values the studio's earlier LCS implementation gave (Lin 2004, section 3.1): they did not move
    assert metrics.rouge("police kill the gunman", "police killed the gunman")["rougeL"] == pytest.approx(0.75)
    assert metrics.rouge("the gunman kill police", "police killed the gunman")["rougeL"] == pytest.approx(0.5)
    assert metrics.rouge("the cat was found under the bed", "the cat was under the bed")["rougeL"] == \
        pytest.approx(12 / 13)
    assert metrics.rouge("Same, words!", "same words")["rougeL"] == 1.0
    assert metrics.rouge("alpha", "beta")["rougeL"] == 0.0 and metrics.rouge("", "beta")["rougeL"] == 0.0
    assert metrics.rouge("police kill the gunman", "police killed the gunman")["rouge2"] == pytest.approx(1 / 3)


def test_bleu_and_chrf_are_sacrebleu():
    for cand, ref in PAIRS:
        assert metrics.bleu(cand, ref) == sacrebleu.sentence_bleu(cand, [ref]).score
        assert metrics.chrf(cand, ref) == sacrebleu.sentence_chrf(cand, [ref]).score
    assert metrics.bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
    assert metrics.bleu("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(53.7284965911771)


def test_exact_match_and_contains_answer():
    assert metrics.exact_match("The Paris.", "paris") == 1.0 and metrics.exact_match("Paris, France", "Paris") == 0.0
    assert metrics.contains_answer("The answer is Paris.", "paris") == 1.0
    assert metrics.contains_answer("Parisian food", "Paris") == 0.0  # whole words only
    assert metrics.contains_answer("anything", "") == 0.0 and metrics.contains_answer("", "x") == 0.0
    assert metrics.normalize("  The  quick, brown FOX! ") == "quick brown fox"


def test_corpus_pools_bleu_and_averages_the_rest():
    cands, refs = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    got = metrics.corpus(cands, refs)
    assert got["bleu"] == sacrebleu.corpus_bleu(cands, [refs]).score
    assert got["chrf"] == sacrebleu.corpus_chrf(cands, [refs]).score
    assert got["rougeL"] == pytest.approx(sum(metrics.rouge(c, r)["rougeL"] for c, r in PAIRS) / len(PAIRS))
    assert got["contains"] == pytest.approx(0.25)  # only the third answer holds its whole reference
    assert metrics.corpus([], []) == dict.fromkeys(metrics.METRICS)
