"""Rows kept and diversity against filter strictness, beside the unfiltered baseline, on one dataset.

    PYTHONPATH=. .venv/bin/python benchmarks/data_quality.py [--data presets/data/identity.jsonl]

Diversity is distinct word 2-grams over all 2-grams of the kept rows (higher: less repetition). Each row
prints: the setting, rows kept, distinct-2, and the time the filters took.
"""

from __future__ import annotations

import argparse
import time

from studio.config import DataSpec
from studio.data import load_rows, quality


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="presets/data/identity.jsonl")
    args = parser.parse_args()
    rows = load_rows(DataSpec(path=args.data)).rows
    settings = [("none (baseline)", DataSpec()), ("exact", DataSpec(dedup="exact"))]
    settings += [(f"near >= {t}", DataSpec(dedup="near", near_threshold=t)) for t in (0.9, 0.8, 0.7, 0.6, 0.5)]
    print(f"{args.data}: {len(rows)} rows")
    print(f"{'filter':<18}{'rows kept':>10}{'distinct-2':>12}{'seconds':>9}")
    for label, spec in settings:
        t0 = time.perf_counter()
        kept = quality.apply(rows, spec, None)[0] if quality.wanted(spec) else rows
        print(f"{label:<18}{len(kept):>10}{quality.distinct_2(kept):>12.3f}{time.perf_counter() - t0:>9.3f}")


if __name__ == "__main__":
    main()
