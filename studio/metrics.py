"""Answer-against-reference metrics from the well-kept libraries: ROUGE (``rouge-score``), BLEU and chrF
(``sacrebleu``), exact match and contains-answer.

    score("The answer is Paris.", "Paris")   # {"rouge1": .., "rougeL": .., "bleu": .., "chrf": .., ...}
    corpus(["Paris", "4"], ["Paris", "four"])  # means, with BLEU and chrF computed over the whole corpus

ROUGE is Google's reference implementation (Lin 2004): lower-cased, split on anything that is not
[a-z0-9], no stemming, F-measure. BLEU and chrF follow sacrebleu's defaults (13a tokenisation, 4-grams,
exponential smoothing for a single sentence; chrF with character 6-grams, beta 2), on a 0-100 scale.
Exact match and contains-answer compare SQuAD-normalised text (lower case, no punctuation, no articles,
single spaces), so "The Paris." matches "paris".
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

__all__ = ["METRICS", "LABELS", "rouge", "bleu", "chrf", "exact_match", "contains_answer", "normalize", "score",
           "corpus"]

METRICS = ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "contains")
LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "bleu": "BLEU", "chrf": "chrF",
          "exact_match": "exact match", "contains": "contains answer"}
_ROUGE = ("rouge1", "rouge2", "rougeL")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(_ROUGE), use_stemmer=False)


def rouge(candidate: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of ``candidate`` against ``reference`` (0..1)."""
    got = _scorer().score(reference, candidate)  # rouge-score takes (target, prediction)
    return {k: got[k].fmeasure for k in _ROUGE}


def bleu(candidate: str, reference: str) -> float:
    """Sentence BLEU (sacrebleu, 0..100)."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(candidate, [reference]).score)


def chrf(candidate: str, reference: str) -> float:
    """Sentence chrF (sacrebleu, 0..100)."""
    import sacrebleu

    return float(sacrebleu.sentence_chrf(candidate, [reference]).score)


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation and articles removed, whitespace collapsed."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(candidate: str, reference: str) -> float:
    """1.0 when the normalised answer equals the normalised reference, else 0.0."""
    return float(normalize(candidate) == normalize(reference))


def contains_answer(candidate: str, reference: str) -> float:
    """1.0 when the normalised reference appears, on word boundaries, in the normalised answer, else 0.0."""
    ref, cand = normalize(reference), normalize(candidate)
    return float(bool(ref) and f" {ref} " in f" {cand} ")


def score(candidate: str, reference: str) -> dict[str, float]:
    """Every metric in ``METRICS`` for one answer."""
    return {**rouge(candidate, reference), "bleu": bleu(candidate, reference), "chrf": chrf(candidate, reference),
            "exact_match": exact_match(candidate, reference), "contains": contains_answer(candidate, reference)}


def corpus(candidates: list[str], references: list[str]) -> dict[str, float | None]:
    """Scores over a set: ROUGE, exact match and contains-answer are means of the per-answer values; BLEU and
    chrF are sacrebleu's corpus scores (n-gram counts pooled over the set, as the metrics are defined).
    Every value is None when the set is empty."""
    if not candidates:
        return dict.fromkeys(METRICS)
    import sacrebleu

    per = [score(c, r) for c, r in zip(candidates, references)]
    out = {k: sum(p[k] for p in per) / len(per) for k in METRICS}
    out["bleu"] = float(sacrebleu.corpus_bleu(candidates, [references]).score)
    out["chrf"] = float(sacrebleu.corpus_chrf(candidates, [references]).score)
    return out
