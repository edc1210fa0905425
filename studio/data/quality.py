"""Data quality filters: exact duplicates, near duplicates (MinHash through datasketch), length in tokens and
language (py3langid).

Each filter reports what it dropped (a count and a few examples), so a person sees what goes before training::

    kept, report = quality.apply(rows, cfg.data, tokenizer)
    report.to_dict()   # {"rows_in": 120, "rows_kept": 97, "filters": [{"name": "exact_duplicates", ...}]}

Rows are the normalised rows of ``studio.data`` ({"messages": [...]} or {"text": ...}). Filters run in the
order exact duplicates, near duplicates, length, language; the first row of each duplicate group is kept.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field

from studio.config import DataSpec
from studio.data.sources import DataError

__all__ = ["SHINGLE", "NUM_PERM", "QualityReport", "Dropped", "row_text", "shingles", "exact_duplicates",
           "near_duplicates", "length_filter", "language_filter", "language_of", "apply", "wanted",
           "distinct_2", "STRICTNESS", "strictness_curve"]

SHINGLE = 5  # characters per shingle: short chat rows have too few words for word n-grams to say much
NUM_PERM = 128  # MinHash permutations: the Jaccard estimate's standard error is about 1/sqrt(128) = 0.09
_EXAMPLES = 3
STRICTNESS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)  # near-duplicate thresholds the strictness curve visits, loose first
_SPACE = re.compile(r"\s+")


@dataclass
class Dropped:
    """One filter's result: how many rows it dropped and a few of them, each with why."""

    name: str
    dropped: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, why: str) -> None:
        self.dropped += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(why)


@dataclass
class QualityReport:
    """Rows in, rows kept, and each filter's drops (in the order they ran)."""

    rows_in: int = 0
    rows_kept: int = 0
    filters: list[Dropped] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """One readable line per filter, for logs and the CLI."""
        return [f"{f.name}: dropped {f.dropped}" + (f" (e.g. {f.examples[0]})" if f.examples else "")
                for f in self.filters]


def row_text(row: dict) -> str:
    """The row's words: its text, or its messages' contents joined (roles left out)."""
    if "text" in row:
        return str(row["text"])
    return "\n".join(str(m.get("content", "")) for m in row.get("messages", []))


def _normal(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


def _short(text: str, n: int = 60) -> str:
    one = _SPACE.sub(" ", text).strip()
    return repr(one if len(one) <= n else one[: n - 1] + "…")


def shingles(text: str) -> set[str]:
    """Character 5-grams of the lower-cased, space-collapsed text (the whole text when shorter)."""
    text = _normal(text)
    if len(text) <= SHINGLE:
        return {text}
    return {text[i: i + SHINGLE] for i in range(len(text) - SHINGLE + 1)}


def exact_duplicates(rows: list[dict]) -> tuple[list[dict], Dropped]:
    """Rows whose text (case and spacing aside) already appeared earlier are dropped."""
    seen: dict[str, int] = {}
    kept, report = [], Dropped("exact_duplicates")
    for i, row in enumerate(rows):
        key = hashlib.sha1(_normal(row_text(row)).encode("utf-8")).hexdigest()
        if key in seen:
            report.note(f"row {i + 1} repeats row {seen[key] + 1}: {_short(row_text(row))}")
            continue
        seen[key] = i
        kept.append(row)
    return kept, report


def _minhash(text: str):
    from datasketch import MinHash

    m = MinHash(num_perm=NUM_PERM, seed=1)
    m.update_batch([s.encode("utf-8") for s in shingles(text)])
    return m


def near_duplicates(rows: list[dict], threshold: float) -> tuple[list[dict], Dropped]:
    """Rows whose estimated Jaccard similarity (MinHash over character 5-grams) to a kept row reaches ``threshold``.

    LSH finds the candidates; each is confirmed by the MinHash estimate itself, so a row goes only when its
    estimated similarity to an earlier kept row is at least ``threshold``.
    """
    from datasketch import MinHashLSH

    # LSH needs two bands or more, which a threshold near 1 leaves no room for: search wider, confirm below
    lsh = MinHashLSH(threshold=min(threshold, 0.9), num_perm=NUM_PERM)
    hashes: dict[str, object] = {}
    kept, report = [], Dropped("near_duplicates")
    for i, row in enumerate(rows):
        m = _minhash(row_text(row))
        best = max(((m.jaccard(hashes[k]), k) for k in lsh.query(m)), default=(0.0, ""))
        if best[0] >= threshold:
            report.note(f"row {i + 1} is ~{best[0]:.0%} like row {int(best[1]) + 1}: {_short(row_text(row))}")
            continue
        key = str(i)
        hashes[key] = m
        lsh.insert(key, m)
        kept.append(row)
    return kept, report


def length_filter(rows: list[dict], tokenizer, min_tokens: int | None, max_tokens: int | None
                  ) -> tuple[list[dict], Dropped]:
    """Rows whose text has fewer than ``min_tokens`` or more than ``max_tokens`` tokens (chat template aside)."""
    kept, report = [], Dropped("length")
    for i, row in enumerate(rows):
        n = len(tokenizer(row_text(row), add_special_tokens=False)["input_ids"])
        if min_tokens and n < min_tokens:
            report.note(f"row {i + 1} has {n} tokens < {min_tokens}: {_short(row_text(row))}")
        elif max_tokens and n > max_tokens:
            report.note(f"row {i + 1} has {n} tokens > {max_tokens}: {_short(row_text(row))}")
        else:
            kept.append(row)
    return kept, report


def language_of(text: str) -> str:
    """The ISO 639-1 code py3langid finds for ``text``."""
    import py3langid

    return py3langid.classify(text)[0]


def language_filter(rows: list[dict], language: str) -> tuple[list[dict], Dropped]:
    """Rows whose text py3langid does not find to be in ``language`` (an ISO 639-1 code such as en).

    Raises:
        DataError: ``language`` is not one py3langid knows (one line).
    """
    import py3langid

    known = {code for code, _ in py3langid.rank("")}  # every language the detector's model scores
    if language not in known:
        raise DataError(f"data.language: {language!r} is not a language code the detector knows "
                        f"(ISO 639-1, e.g. {', '.join(sorted(known)[:8])}, ...)")
    kept, report = [], Dropped("language")
    for i, row in enumerate(rows):
        found = language_of(row_text(row))
        if found == language:
            kept.append(row)
        else:
            report.note(f"row {i + 1} reads as {found}, not {language}: {_short(row_text(row))}")
    return kept, report


def wanted(spec: DataSpec) -> bool:
    """Whether ``spec`` asks for any quality filter."""
    return spec.dedup != "none" or bool(spec.min_tokens) or bool(spec.max_tokens) or bool(spec.language)


def apply(rows: list[dict], spec: DataSpec, tokenizer, label: str = "data") -> tuple[list[dict], QualityReport]:
    """Run the filters ``spec`` asks for (data.dedup, data.near_threshold, data.min_tokens, data.max_tokens,
    data.language).

    Raises:
        DataError: the filters leave no row (one line with what each dropped).
    """
    report = QualityReport(rows_in=len(rows))
    if spec.dedup in ("exact", "near"):
        rows, dropped = exact_duplicates(rows)
        report.filters.append(dropped)
    if spec.dedup == "near":
        rows, dropped = near_duplicates(rows, spec.near_threshold)
        report.filters.append(dropped)
    if spec.min_tokens or spec.max_tokens:
        rows, dropped = length_filter(rows, tokenizer, spec.min_tokens, spec.max_tokens)
        report.filters.append(dropped)
    if spec.language:
        rows, dropped = language_filter(rows, spec.language)
        report.filters.append(dropped)
    report.rows_kept = len(rows)
    if not rows:
        counts = ", ".join(f"{f.name} dropped {f.dropped}" for f in report.filters)
        raise DataError(f"{label}: the quality filters left no rows of {report.rows_in} ({counts}); loosen "
                        "data.dedup, data.near_threshold, data.min_tokens, data.max_tokens or data.language")
    return rows, report


def distinct_2(rows: list[dict]) -> float:
    """Diversity: distinct word 2-grams over all word 2-grams of the rows' text (1.0: nothing repeats)."""
    grams = []
    for row in rows:
        words = row_text(row).lower().split()
        grams += list(zip(words, words[1:]))
    return len(set(grams)) / max(len(grams), 1)


def strictness_curve(rows: list[dict], thresholds: tuple[float, ...] = STRICTNESS) -> list[dict]:
    """Rows kept and their diversity as the near-duplicate filter gets stricter (after exact duplicates go).

    Returns:
        One {"filter", "threshold", "rows", "distinct_2"} per step: none, exact, then each threshold.
    """
    exact, _ = exact_duplicates(rows)
    out = [{"filter": "none", "threshold": None, "rows": len(rows), "distinct_2": distinct_2(rows)},
           {"filter": "exact", "threshold": None, "rows": len(exact), "distinct_2": distinct_2(exact)}]
    for t in thresholds:
        kept, _ = near_duplicates(exact, t)
        out.append({"filter": f"near >= {t:g}", "threshold": t, "rows": len(kept), "distinct_2": distinct_2(kept)})
    return out
