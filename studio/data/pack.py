"""Packing examples into rows and collating rows into batches.

A packed row holds several examples back to back with ``position_ids`` restarting at 0 for each.
transformers (masking_utils.find_packed_sequence_indices) reads those restarts as sequence boundaries
and blocks attention across them, but only when the batch carries no attention_mask and the model
builds no KV cache: so packed batches come without an attention_mask and with ``use_cache=False``.
Without use_cache=False the model makes a cache during training and attends across examples.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

import torch

from studio.data.tokenize import IGNORE

__all__ = ["pack", "Collator"]


def pack(examples: list[dict], max_len: int, seed: int = 0) -> list[dict]:
    """Pack examples into rows of at most ``max_len`` tokens (best-fit decreasing).

    Longest examples are placed first, each into the fullest row that still has room, which fills
    rows to within a few tokens for typical length mixes. Ties between equal lengths and the order of
    the finished rows follow ``seed``, so the same data and seed give the same rows.

    Returns:
        Rows with input_ids, labels and position_ids (restarting at 0 for each example).
    """
    order = list(range(len(examples)))
    rng = random.Random(seed)
    rng.shuffle(order)
    order.sort(key=lambda i: -len(examples[i]["input_ids"]))  # stable: ties keep the seeded order
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), kept sorted for bisect
    for i in order:
        size = len(examples[i]["input_ids"])
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            room, b = free.pop(at)
        else:
            room, b = max_len, len(bins)
            bins.append([])
        bins[b].append(i)
        if room - size > 0:
            bisect.insort(free, (room - size, b))
    rng.shuffle(bins)
    return [_join([examples[i] for i in b]) for b in bins]


def _join(parts: list[dict]) -> dict:
    ids, labels, positions = [], [], []
    for ex in parts:
        ids += ex["input_ids"]
        labels += ex["labels"]
        positions += range(len(ex["input_ids"]))
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


@dataclass
class Collator:
    """Batch rows with padding to the longest row in the batch (never to a fixed length).

    Unpacked rows get an attention_mask. Packed rows (those with position_ids) get none: their
    position_ids mark the example boundaries, padding continues the positions of the last example
    (so it never looks like a new sequence start) and carries no loss. Packed batches also carry
    ``use_cache=False``, without which the model would attend across packed examples.
    """

    pad_token_id: int
    pad_to_multiple_of: int = 1

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in rows[0]
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        extra = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.tensor(row["labels"], dtype=torch.long)
            if packed:
                last = row["position_ids"][-1] + 1 if n else 0
                extra[i, :n] = torch.tensor(row["position_ids"], dtype=torch.long)
                extra[i, n:] = torch.arange(last, last + width - n)
            else:
                extra[i, :n] = 1
        if packed:
            return {"input_ids": ids, "labels": labels, "position_ids": extra, "use_cache": False}
        return {"input_ids": ids, "labels": labels, "attention_mask": extra}
