"""Mixtures: several sources in one run, each with a share of the training tokens and an optional task tag.

Replay is a mixture too: a share of general data (``data.replay_path``) mixed into a narrow task so the
model keeps practising what it already did well::

    rows = mixture.tag(rows, "identity")                    # "[identity] Who are you?"
    mixed, report = mixture.combine(main, [general], [0.3], seed=42, labels=["identity", "replay"])
    report.lines()   # "identity: 40 rows, 1480 tokens, 70% of the tokens (asked 70%)", ...

The main source (``data.path``) is used whole, once; every other source is sampled (in a seeded order,
repeating when it is small) until its token count is as close as one row allows to its share of the total.
Shares are counted in real training tokens (the examples' ``input_ids``, after the chat template).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from studio.config import DataSpec

__all__ = ["Source", "Share", "MixReport", "sources", "tag", "combine"]


@dataclass(frozen=True)
class Source:
    """One mixed-in source: where it is, its share of the training tokens, its task tag and row format."""

    path: str
    weight: float
    task: str | None = None
    format: str = "auto"
    label: str = ""


def sources(spec: DataSpec) -> list[Source]:
    """The mixed-in sources ``spec`` asks for: its ``mix`` entries, then the replay source when its share is set."""
    out = [Source(m["path"], float(m["weight"]), m.get("task"), m.get("format") or "auto", m.get("task") or m["path"])
           for m in spec.mix]
    if spec.replay_share:
        out.append(Source(spec.replay_path, spec.replay_share, None, "auto", "replay"))
    return out


def tag(rows: list[dict], task: str | None) -> list[dict]:
    """Copies of ``rows`` whose first user message (or text) starts with ``[task]``; the rows as they are if none."""
    if not task:
        return rows
    mark = f"[{task}] "
    out = []
    for row in rows:
        if "text" in row:
            out.append({**row, "text": mark + str(row["text"])})
            continue
        messages, done = [], False
        for m in row.get("messages", []):
            if not done and m.get("role") == "user":
                m, done = {**m, "content": mark + str(m.get("content", ""))}, True
            messages.append(m)
        out.append({**row, "messages": messages})
    return out


@dataclass
class Share:
    """What one source gave: rows (repeats counted), tokens, and the share it got against the share asked."""

    label: str
    rows: int
    tokens: int
    share: float
    asked: float
    distinct: int = 0  # different rows among ``rows``; fewer means the source was repeated


@dataclass
class MixReport:
    """One Share per source, the main source first."""

    shares: list[Share] = field(default_factory=list)

    def to_dict(self) -> list[dict]:
        return [asdict(s) for s in self.shares]

    def lines(self) -> list[str]:
        """One readable line per source, for the preview, the log and the CLI."""
        out = []
        for s in self.shares:
            again = f", {s.distinct} distinct (repeated)" if s.distinct < s.rows else ""
            out.append(f"{s.label}: {s.rows} rows{again}, {s.tokens} tokens, {s.share:.0%} of the tokens "
                       f"(asked {s.asked:.0%})")
        return out


def _tokens(example: dict) -> int:
    return len(example["input_ids"])


def _draw(examples: list[dict], target: float, rng: random.Random) -> list[dict]:
    """Examples in a seeded order (repeating when needed) until the next one would overshoot ``target`` by more
    than it would fall short: the share is off by at most half a row."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    out, got = [], 0
    while True:
        nxt = examples[order[len(out) % len(order)]]
        if got + _tokens(nxt) / 2 > target:
            return out
        out.append(nxt)
        got += _tokens(nxt)


def combine(main: list[dict], extra: list[list[dict]], weights: list[float], seed: int,
            labels: list[str]) -> tuple[list[dict], MixReport]:
    """The main examples whole plus each extra source's examples at its token share, shuffled together.

    Args:
        main: the main source's token examples (used once each).
        extra: each mixed-in source's token examples (none empty).
        weights: each extra source's share of the total training tokens; they sum below 1.
        seed: orders the draws and the final shuffle.
        labels: a name for the main source, then one per extra source, for the report.
    """
    rng = random.Random(seed)
    main_tokens = sum(map(_tokens, main))
    total = main_tokens / (1.0 - sum(weights))
    drawn = [_draw(examples, w * total, rng) for examples, w in zip(extra, weights)]
    parts = [main] + drawn
    counted = [sum(map(_tokens, p)) for p in parts]
    whole = max(sum(counted), 1)
    report = MixReport([Share(label, len(p), n, n / whole, asked, len({id(e) for e in p}))
                        for label, p, n, asked in zip(labels, parts, counted, [1.0 - sum(weights)] + list(weights))])
    mixed = [e for p in parts for e in p]
    rng.shuffle(mixed)
    return mixed, report
