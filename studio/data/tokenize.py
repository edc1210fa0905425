"""Rendering rows with the chat template and tokenizing them with an exact loss mask.

How the mask is found: the conversation is rendered prefix by prefix. For the assistant turn i, the
text ``render(messages[:i], add_generation_prompt=True)`` is the prompt and
``render(messages[:i + 1])`` ends with the answer, so the characters between the two lengths are the
answer as the template writes it (including its end-of-turn token). The full text is then tokenized
once (all rows in one batch call) and each token is trained when its first character lies inside an
answer span: a character-to-token mapping, the same idea as transformers' assistant masks, but it
works with every template, not only those that mark ``{% generation %}`` blocks.

Templates that rewrite earlier turns (so that a prefix render is not a prefix of the full text) fall
back to training on the last answer only; the stats count such rows.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field

__all__ = ["FALLBACK_TEMPLATE", "IGNORE", "chat_template", "Tokenized", "tokenize_rows"]

IGNORE = -100  # the label value transformers' loss skips

FALLBACK_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### User:\n{{ m['content'] }}\n\n"
    "{% else %}### Assistant:\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
"""A plain template for tokenizers that ship none (base models). Saved with the run's tokenizer so
chat renders prompts the same way training did."""


def chat_template(tokenizer) -> str:
    """The tokenizer's own chat template, or the studio's plain fallback when it has none."""
    own = getattr(tokenizer, "chat_template", None)
    return own if isinstance(own, str) and own.strip() else FALLBACK_TEMPLATE


@dataclass
class Tokenized:
    """Tokenized rows plus what happened on the way (skips, truncation, template fallbacks)."""

    examples: list[dict] = field(default_factory=list)  # {"input_ids", "labels"} lists of ints
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row index, reason)
    truncated: int = 0
    last_turn_only: int = 0  # rows whose template forced the last-answer-only fallback
    lengths: list[int] = field(default_factory=list)  # lengths before truncation, of kept rows


def _render(tokenizer, template: str, messages: list[dict], generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation,
                                         chat_template=template)


def _spans(tokenizer, template: str, messages: list[dict]) -> tuple[str, list[tuple[int, int]], bool]:
    """The full text, the answer character spans, and whether the last-answer fallback was used."""
    full = _render(tokenizer, template, messages, False)
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    spans: list[tuple[int, int]] = []
    for i in answers:
        prompt = _render(tokenizer, template, messages[:i], True) if i else ""
        upto = _render(tokenizer, template, messages[: i + 1], False)
        if not (full.startswith(upto) and upto.startswith(prompt)):
            break
        spans.append((len(prompt), len(upto)))
    else:
        return full, spans, False
    # This template rewrites earlier turns: train on the last answer, rendered alone
    last = answers[-1]
    prompt = _render(tokenizer, template, messages[:last], True) if last else ""
    upto = _render(tokenizer, template, messages[: last + 1], False)
    start = len(os.path.commonprefix([prompt, upto]))
    return upto, [(start, len(upto))], True


def _prepare(tokenizer, template: str, row: dict, train_on: str) -> tuple[str, list[tuple[int, int]], bool]:
    if "text" in row:
        text = row["text"] + (tokenizer.eos_token or "")
        return text, [(0, len(text))], False
    if train_on == "all":
        full = _render(tokenizer, template, row["messages"], False)
        return full, [(0, len(full))], False
    return _spans(tokenizer, template, row["messages"])


def _labels(ids: list[int], offsets: list, spans: list[tuple[int, int]]) -> list[int]:
    """Labels: the token id where the token's first character lies in an answer span, else IGNORE."""
    starts = [o[0] for o in offsets]
    labels = [IGNORE] * len(ids)
    for first, end in spans:
        lo, hi = bisect.bisect_left(starts, first), bisect.bisect_left(starts, end)
        labels[lo:hi] = ids[lo:hi]
    return labels


def _encode(tokenizer, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Token ids and character offsets for each text, in one batch call where the tokenizer is fast."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None:
        # the Rust tokenizer directly: the wrapper's per-token Python conversion costs more than encoding
        return [(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=False)]
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return list(zip(enc["input_ids"], enc["offset_mapping"]))
    out = []  # slow tokenizers have no offsets: rebuild them from decoded pieces
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        offsets, pos = [], 0
        for tok in ids:
            piece = tokenizer.decode([tok])
            found = text.find(piece, pos) if piece else -1
            start = found if found >= 0 else pos
            pos = start + len(piece) if found >= 0 else pos
            offsets.append((start, pos))
        out.append((ids, offsets))
    return out


def tokenize_rows(rows: list[dict], tokenizer, *, max_len: int, train_on: str = "assistant") -> Tokenized:
    """Tokenize normalised rows with labels masked to the trained tokens, cut to ``max_len``.

    Args:
        rows: normalised rows ({"messages": [...]} or {"text": ...}).
        tokenizer: a transformers tokenizer; its chat template is used, or FALLBACK_TEMPLATE.
        max_len: rows longer than this are cut (and counted).
        train_on: "assistant" (loss on answers only) or "all".
    """
    template, result = chat_template(tokenizer), Tokenized()
    prepared, kept = [], []
    for index, row in enumerate(rows):
        try:
            text, spans, fallback = _prepare(tokenizer, template, row, train_on)
        except Exception as err:  # a template may raise on a row it does not accept (e.g. role order)
            result.skipped.append((index, f"the chat template refused it ({str(err).strip()[:160]})"))
            continue
        prepared.append((text, spans))
        kept.append(index)
        result.last_turn_only += fallback
    encoded = _encode(tokenizer, [text for text, _ in prepared]) if prepared else []
    for index, (text, spans), (ids, offsets) in zip(kept, prepared, encoded):
        labels = _labels(ids, offsets, spans)
        if labels:
            labels[0] = IGNORE  # the first token is never predicted; packing relies on this
        length = len(ids)
        if length > max_len:
            ids, labels = ids[:max_len], labels[:max_len]
        if not any(label != IGNORE for label in labels):
            why = "no answer tokens within max_seq_len" if length > max_len else "no tokens to train on"
            result.skipped.append((index, why))
            continue
        result.truncated += length > max_len
        result.lengths.append(length)
        result.examples.append({"input_ids": ids, "labels": labels})
    return result
