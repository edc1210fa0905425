"""Datasets: load (json/jsonl/csv/parquet/folder/hub), normalise to chat messages, tokenize, mask, pack.

    rows = load_rows(cfg.data)                 # normalised rows, format detected, skips counted
    prepared = build(cfg, tokenizer)           # .train / .eval token rows, .stats
    collate = Collator(tokenizer.pad_token_id) # dynamic padding; packed rows get position_ids
    view = preview(cfg, tokenizer, n=5)        # rendered examples with trained spans marked

Every problem with the data is a DataError (a ConfigError) with one readable line.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import asdict, dataclass, field

from studio.config import DataSpec, RunConfig
from studio.data.formats import FORMATS, ROLES, detect, normalise
from studio.data import mixture, quality
from studio.data.pack import Collator, pack
from studio.data.sources import MAX_BYTES, DataError, Skips, read_records
from studio.data.tokenize import FALLBACK_TEMPLATE, IGNORE, Tokenized, chat_template, tokenize_rows

__all__ = [
    "DataError", "Rows", "DataStats", "Prepared", "Preview", "MAX_BYTES", "FORMATS", "ROLES", "IGNORE",
    "FALLBACK_TEMPLATE", "chat_template", "load_rows", "build", "preview", "pack", "Collator",
    "check_packing", "tokenize_rows", "split_rows",
]


@dataclass
class Rows:
    """Normalised rows of one source, the format found, and what was skipped on the way."""

    rows: list[dict]
    format: str
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)


def load_rows(spec: DataSpec, *, path: str | None = None, max_bytes: int = MAX_BYTES) -> Rows:
    """Read ``spec.path`` (or ``path``) and normalise every row to chat messages or text.

    Raises:
        DataError: unreadable source, unknown format, or no usable rows; one line naming the cause.
    """
    source = path or spec.path
    skips = Skips()
    records = read_records(source, hub_config=spec.hub_config, split=spec.split, max_bytes=max_bytes, skips=skips)
    fmt = detect(records, spec.columns or {}, source, spec.format)
    rows = normalise(records, fmt, spec.columns or {}, skips, spec.system_prompt)
    if not rows:
        first = f" (first: {skips.examples[0]})" if skips.examples else ""
        raise DataError(f"{source}: no usable rows; {skips.count} skipped{first}")
    if spec.max_rows:
        rows = rows[: spec.max_rows]
    return Rows(rows, fmt.name, skips.count, list(skips.examples))


@dataclass
class DataStats:
    """What build() did, for the log, the UI and the run's model card. Also readable as a mapping."""

    format: str = ""
    rows: int = 0  # examples kept for training
    eval_rows: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    truncated: int = 0
    real_tokens: int = 0  # non-pad tokens in the training rows
    trained_tokens: int = 0  # tokens that carry loss
    lengths: list[int] = field(default_factory=list)  # token length of each kept example, before cutting
    max_seq_len: int = 0
    over_max: int = 0
    packing: bool = False
    packed_rows: int = 0
    notes: list[str] = field(default_factory=list)
    quality: dict = field(default_factory=dict)  # quality.QualityReport.to_dict() when data asks for filters
    mixture: list = field(default_factory=list)  # mixture.MixReport.to_dict() when data mixes sources in

    def __getitem__(self, key: str):
        return getattr(self, key)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Prepared:
    """Token rows ready for the Trainer: ``train`` and ``eval`` lists of dicts, plus ``stats``."""

    train: list[dict]
    eval: list[dict]
    stats: DataStats


def split_rows(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows: ``fraction`` of them held out by a shuffle with ``seed`` (the split ``build`` makes)."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    chosen = set(order[:held])
    return [r for i, r in enumerate(rows) if i not in chosen], [rows[i] for i in sorted(chosen)]


def _tokenize(rows: list[dict], tokenizer, cfg: RunConfig, stats: DataStats, label: str) -> Tokenized:
    tok = tokenize_rows(rows, tokenizer, max_len=cfg.train.max_seq_len, train_on=cfg.data.train_on)
    stats.skipped += len(tok.skipped)
    for index, reason in tok.skipped:
        if len(stats.skipped_examples) < 5:
            stats.skipped_examples.append(f"{label} row {index + 1}: {reason}")
    if tok.last_turn_only:
        stats.notes.append(f"{tok.last_turn_only} {label} rows: the chat template rewrites earlier turns, "
                           "so only their last answer is trained")
    return tok


def build(cfg: RunConfig, tokenizer, *, model=None, max_bytes: int = MAX_BYTES) -> Prepared:
    """Load, split, tokenize, mask and (when ``cfg.data.packing``) pack the run's data.

    Args:
        cfg: the run config (data section, train.max_seq_len and train.seed are used).
        tokenizer: the model's tokenizer.
        model: when given and packing is on, packing is first checked on it (check_packing); a model
            that would attend across packed examples gets padded batches instead, with a note in stats.
        max_bytes: size limit for local data.

    Raises:
        DataError: the data cannot be read or leaves no trainable example.
    """
    spec, seed = cfg.data, cfg.train.seed
    loaded = load_rows(spec, max_bytes=max_bytes)
    stats = DataStats(format=loaded.format, skipped=loaded.skipped, skipped_examples=list(loaded.skipped_examples),
                      max_seq_len=cfg.train.max_seq_len)
    if quality.wanted(spec):  # before the split, so a copy of a training row cannot land in the held-out rows
        loaded.rows, report = quality.apply(loaded.rows, spec, tokenizer, spec.path)
        stats.quality = report.to_dict()
    train_rows, eval_rows = split_rows(mixture.tag(loaded.rows, spec.task), spec.val_fraction, seed)
    if spec.val_path:
        extra = load_rows(spec, path=spec.val_path, max_bytes=max_bytes)
        eval_rows = eval_rows + mixture.tag(extra.rows, spec.task)
    train = _tokenize(train_rows, tokenizer, cfg, stats, "train")
    if not train.examples:
        raise DataError(f"{spec.path}: no example has tokens to train on "
                        f"({'; '.join(stats.skipped_examples[:2]) or 'all rows were skipped'})")
    if mixture.sources(spec):  # the held-out rows stay the main source's: they measure the task
        train.examples, report = _mix(train.examples, cfg, tokenizer, max_bytes)
        stats.mixture = report.to_dict()
    evals = _tokenize(eval_rows, tokenizer, cfg, stats, "eval") if eval_rows else Tokenized()
    stats.rows, stats.eval_rows = len(train.examples), len(evals.examples)
    stats.truncated, stats.lengths = train.truncated, train.lengths
    stats.over_max = sum(n > cfg.train.max_seq_len for n in train.lengths)
    stats.real_tokens = sum(len(e["input_ids"]) for e in train.examples)
    stats.trained_tokens = sum(sum(t != IGNORE for t in e["labels"]) for e in train.examples)
    packing = spec.packing
    if packing and model is not None:
        problem = check_packing(model)
        if problem:
            packing = False
            stats.notes.append(f"packing turned off: {problem}; batches are padded instead")
    stats.packing = packing
    train_out, eval_out = train.examples, evals.examples
    if packing:
        train_out = pack(train.examples, cfg.train.max_seq_len, seed)
        eval_out = pack(evals.examples, cfg.train.max_seq_len, seed) if evals.examples else []
        stats.packed_rows = len(train_out)
    return Prepared(train_out, eval_out, stats)


def _mix(main: list[dict], cfg: RunConfig, tokenizer, max_bytes: int) -> tuple[list[dict], mixture.MixReport]:
    """The main source's token examples with every mixed-in source's at its token share (mixture.combine)."""
    spec, extra = cfg.data, []
    wanted = mixture.sources(spec)
    for src in wanted:
        own = dataclasses.replace(spec, path=src.path, format=src.format, columns={}, max_rows=None, mix=[],
                                  replay_share=0.0, task=src.task)
        rows = load_rows(own, max_bytes=max_bytes).rows
        if quality.wanted(own):
            rows, _ = quality.apply(rows, own, tokenizer, src.path)
        tok = tokenize_rows(mixture.tag(rows, src.task), tokenizer, max_len=cfg.train.max_seq_len,
                            train_on=spec.train_on)
        if not tok.examples:
            raise DataError(f"{src.path}: no example of this mixed-in source has tokens to train on")
        extra.append(tok.examples)
    labels = [spec.task or spec.path] + [s.label for s in wanted]
    return mixture.combine(main, extra, [s.weight for s in wanted], cfg.train.seed, labels)


def check_packing(model) -> str | None:
    """Whether ``model`` keeps packed examples apart; None when it does, else the reason it does not.

    Runs two short sequences packed in one row and one by one (eval mode, no dropout) and compares the
    logits: cheap, and it catches architectures or adapters (e.g. prefix tuning) that would silently
    attend across examples.
    """
    import torch

    was_training = model.training
    try:
        device = next(model.parameters()).device
        a = torch.tensor([[5, 6, 7, 8]], device=device)
        b = torch.tensor([[9, 10, 11]], device=device)
        model.eval()
        with torch.no_grad():
            alone = torch.cat([model(input_ids=a, use_cache=False).logits,
                               model(input_ids=b, use_cache=False).logits], 1).float()
            packed = model(input_ids=torch.cat([a, b], 1), use_cache=False,
                           position_ids=torch.tensor([[0, 1, 2, 3, 0, 1, 2]], device=device)).logits.float()
        gap = (alone - packed).abs().max().item()
        scale = alone.abs().max().item() + 1e-6
        return None if gap <= 1e-2 * scale else "this model attends across packed examples"
    except Exception as err:  # any failure means packing cannot be trusted here
        return f"packing could not be checked on this model ({type(err).__name__})"
    finally:
        model.train(was_training)


@dataclass
class Preview:
    """Rendered examples with trained spans marked, and token-length statistics for a histogram."""

    examples: list[list[tuple[str, bool]]]  # per example: (text, trained) runs in order
    lengths: list[int]
    max_seq_len: int
    over_max: int
    format: str
    rows: int
    skipped: int
    skipped_examples: list[str]
    quality: list[str] = field(default_factory=list)  # one line per quality filter: its drops, a first example
    mixture: list[str] = field(default_factory=list)  # one line per source: rows, tokens, share got and asked


def _runs(tokenizer, example: dict) -> list[tuple[str, bool]]:
    runs: list[tuple[str, bool]] = []
    ids, labels = example["input_ids"], example["labels"]
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != IGNORE) != (labels[start] != IGNORE):
            runs.append((tokenizer.decode(ids[start:i]), labels[start] != IGNORE))
            start = i
    return runs


def preview(cfg: RunConfig, tokenizer, n: int = 5, *, max_bytes: int = MAX_BYTES) -> Preview:
    """The first ``n`` examples as the model will see them, and the length of every example.

    Raises:
        DataError: the data cannot be read.
    """
    loaded = load_rows(cfg.data, max_bytes=max_bytes)
    report = None
    if quality.wanted(cfg.data):  # the preview shows the rows training will get, and what the filters drop
        loaded.rows, report = quality.apply(loaded.rows, cfg.data, tokenizer, cfg.data.path)
    tok = tokenize_rows(mixture.tag(loaded.rows, cfg.data.task), tokenizer, max_len=cfg.train.max_seq_len,
                        train_on=cfg.data.train_on)
    examples, lengths, mixed = tok.examples, tok.lengths, None
    if mixture.sources(cfg.data) and examples:  # the rows as training mixes them, in its shuffled order
        examples, mixed = _mix(examples, cfg, tokenizer, max_bytes)
        lengths = [len(e["input_ids"]) for e in examples]
    shown = [_runs(tokenizer, e) for e in examples[:n]]
    reasons = list(loaded.skipped_examples) + [f"row {i + 1}: {r}" for i, r in tok.skipped]
    return Preview(shown, lengths, cfg.train.max_seq_len, sum(x > cfg.train.max_seq_len for x in lengths),
                   loaded.format, len(examples), loaded.skipped + len(tok.skipped), reasons[:5],
                   report.lines() if report else [], mixed.lines() if mixed else [])
