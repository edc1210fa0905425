"""Preference rows: paired {prompt, chosen, rejected} and unpaired {prompt, completion, label}, checked and counted.

Accepted row shapes (column names mapped through ``data.columns`` like the other formats):

- paired, ``preference``: ``prompt`` (text or a message list), ``chosen`` and ``rejected`` (text or message
  lists), optional ``system``; or full transcripts ``{chosen, rejected}`` with no prompt, split at the
  longest shared prefix (messages, or text cut back to a word boundary);
- unpaired, ``unpaired`` (KTO): ``prompt``, ``completion`` and ``label`` (true: a good answer).

Rows come out in the conversational form TRL's trainers read (``prompt`` a list of messages, each answer a
list with one assistant message), or plain text for text transcripts. A row that cannot train is skipped
with its reason, the first kept for the warning line: a missing side, empty text, chosen equal to
rejected, or a side with no tokens left within ``train.max_seq_len``.

    pairs = build(cfg, tokenizer, paired=True)        # .train / .eval row lists, .stats (a DataStats)
    shown = preview(cfg, tokenizer, n=3)              # [(prompt, chosen, rejected)] as the model sees them
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.config import DataSpec, RunConfig
from studio.data import split_rows
from studio.data.formats import ROLES, Format
from studio.data.sources import MAX_BYTES, DataError, Record, Skips, read_records
from studio.data.tokenize import chat_template

__all__ = ["PREFERENCE_FORMATS", "BadRow", "normalise_records", "PairStats", "Pairs", "detect", "load", "build", "preview"]

PREFERENCE_FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("preference", ("chosen", "rejected"), ("prompt", "system"),
           "prompt, chosen, rejected (text or message lists), or chosen/rejected transcripts sharing a prefix"),
    Format("unpaired", ("prompt", "completion", "label"), ("system",),
           "prompt, completion and label (true for a good answer), for KTO"),
)}


class BadRow(Exception):
    """A row that cannot train; the message says why."""


def normalise_records(records: list[Record], to_row, skips: Skips, max_rows: int | None) -> list[dict]:
    """``to_row(data)`` for every record, skipping (and counting in ``skips``) those that raise BadRow."""
    rows = []
    for rec in records:
        try:
            if not isinstance(rec.data, dict):
                raise BadRow(f"expected an object with columns, got {type(rec.data).__name__}")
            rows.append(to_row(rec.data))
        except BadRow as err:
            skips.add(f"{rec.where}: {err}")
    return rows[:max_rows] if max_rows else rows


@dataclass
class PairStats:
    """What loading kept and skipped; the same keys the SFT data's DataStats has where they apply."""

    format: str = ""
    rows: int = 0
    eval_rows: int = 0
    skipped: int = 0
    skipped_examples: list | None = None
    truncated: int = 0
    lengths: list | None = None  # tokens of each kept row's longer side, prompt included
    max_seq_len: int = 0

    def __getitem__(self, key: str):
        return getattr(self, key)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Pairs:
    """Checked preference rows for the trainer: ``train`` and ``eval`` lists of dicts, plus ``stats``."""

    train: list[dict]
    eval: list[dict]
    stats: PairStats


def _col(name: str, columns: dict) -> str:
    return str(columns.get(name, name))


def detect(records: list[Record], columns: dict, wanted: str = "auto") -> Format | None:
    """The preference format of ``records`` from their columns, or None when they are not preference rows."""
    found = {str(k) for rec in records[:200] if isinstance(rec.data, dict) for k in rec.data}
    candidates = PREFERENCE_FORMATS.values() if wanted == "auto" else [PREFERENCE_FORMATS.get(wanted)]
    for fmt in candidates:
        if fmt is not None and all(_col(c, columns) in found for c in fmt.required):
            return fmt
    return None


def _text(value, what: str) -> str:
    if value is None:
        raise BadRow(f"{what} is missing")
    if not isinstance(value, str):
        raise BadRow(f"{what} is {type(value).__name__}, expected text or messages")
    if not value.strip():
        raise BadRow(f"{what} is empty")
    return value


def _messages(value, what: str) -> list[dict]:
    """Text becomes one message; a list of {role, content} is checked message by message."""
    if value is None:
        raise BadRow(f"{what} is missing")
    if not isinstance(value, list):
        return [{"role": "user", "content": _text(value, what)}]
    if not value:
        raise BadRow(f"{what} is empty")
    out = []
    for i, item in enumerate(value, 1):
        role = item.get("role") if isinstance(item, dict) else None
        if role not in ROLES:
            raise BadRow(f"{what} item {i} has no role among {', '.join(ROLES)}")
        out.append({"role": role, "content": _text(item.get("content"), f"{what} item {i} content")})
    return out


def _answer(value, what: str) -> list[dict]:
    if isinstance(value, list):
        return _messages(value, what)
    return [{"role": "assistant", "content": _text(value, what)}]


def _split_transcripts(chosen, rejected) -> dict:
    """{chosen, rejected} full transcripts -> prompt plus the two answers after their shared prefix."""
    if isinstance(chosen, list) and isinstance(rejected, list):
        chosen, rejected = _messages(chosen, "chosen"), _messages(rejected, "rejected")
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise BadRow("chosen and rejected share no prompt (no common first message)")
        return {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}
    chosen, rejected = _text(chosen, "chosen"), _text(rejected, "rejected")
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and not chosen[n - 1].isspace():  # cut back to a word boundary
        n -= 1
    if n == 0:
        raise BadRow("chosen and rejected share no prompt (no common prefix)")
    return {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}


def _system(prompt, system: str | None):
    if system and isinstance(prompt, list) and prompt[0]["role"] != "system":
        return [{"role": "system", "content": system}] + prompt
    return prompt


def _paired(data: dict, columns: dict, system: str | None) -> dict:
    chosen, rejected = data.get(_col("chosen", columns)), data.get(_col("rejected", columns))
    for side, value in (("chosen", chosen), ("rejected", rejected)):
        if value is None or (isinstance(value, (str, list)) and not value):
            raise BadRow(f"{_col(side, columns)} is {'missing' if value is None else 'empty'}")
    prompt = data.get(_col("prompt", columns))
    if prompt is None:
        row = _split_transcripts(chosen, rejected)
    else:
        row = {"prompt": _messages(prompt, _col("prompt", columns)), "chosen": _answer(chosen, "chosen"),
               "rejected": _answer(rejected, "rejected")}
    if not row["chosen"] or not row["rejected"]:
        raise BadRow("chosen and rejected are the same" if row["chosen"] == row["rejected"] else
                      f"{'chosen' if not row['chosen'] else 'rejected'} is empty after the shared prompt")
    if row["chosen"] == row["rejected"]:
        raise BadRow("chosen and rejected are the same")
    own = data.get(_col("system", columns))
    row["prompt"] = _system(row["prompt"], own if isinstance(own, str) and own.strip() else system)
    return row


def _label(value) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "good", "bad", "1", "0"):
        return value.strip().lower() in ("true", "good", "1")
    raise BadRow(f"label is {value!r}, expected true or false")


def _unpaired(data: dict, columns: dict, system: str | None) -> dict:
    prompt = _messages(data.get(_col("prompt", columns)), _col("prompt", columns))
    own = data.get(_col("system", columns))
    return {"prompt": _system(prompt, own if isinstance(own, str) and own.strip() else system),
            "completion": _answer(data.get(_col("completion", columns)), _col("completion", columns)),
            "label": _label(data.get(_col("label", columns)))}


_NORMALISERS = {"preference": _paired, "unpaired": _unpaired}


def load(spec: DataSpec, *, path: str | None = None, max_bytes: int = MAX_BYTES) -> tuple[str, list[dict], Skips]:
    """(format name, normalised rows, skips) of a preference dataset.

    Raises:
        DataError: unreadable source, or columns that are no preference format (one line naming both).
    """
    source = path or spec.path
    skips = Skips()
    records = read_records(source, hub_config=spec.hub_config, split=spec.split, max_bytes=max_bytes, skips=skips)
    fmt = detect(records, spec.columns or {}, spec.format if spec.format in PREFERENCE_FORMATS else "auto")
    if fmt is None:
        have = sorted({str(k) for r in records[:200] if isinstance(r.data, dict) for k in r.data})
        expected = "; ".join(f"{f.name}: {f.about}" for f in PREFERENCE_FORMATS.values())
        raise DataError(f"{source}: a preference objective needs preference rows; the data has columns "
                        f"{', '.join(have[:20]) or 'none'} (expected {expected}; map yours with data.columns)")
    normalise = _NORMALISERS[fmt.name]
    rows = normalise_records(records, lambda data: normalise(data, spec.columns or {}, spec.system_prompt), skips,
                             spec.max_rows)
    return fmt.name, rows, skips


def _ids(tokenizer, template: str, prompt, answer=None) -> list[int]:
    if isinstance(prompt, str):
        text = prompt + (answer or "")
    else:
        text = tokenizer.apply_chat_template(prompt + (answer or []), tokenize=False, chat_template=template,
                                             add_generation_prompt=answer is None)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _token_check(row: dict, tokenizer, template: str, max_len: int) -> int:
    """The longer side's token count (prompt included); BadRow when a side has no tokens within ``max_len``."""
    prompt = _ids(tokenizer, template, row["prompt"])
    longest = 0
    for side in [k for k in ("chosen", "rejected", "completion") if k in row]:
        full = len(_ids(tokenizer, template, row["prompt"], row[side]))
        if full <= len(prompt):
            raise BadRow(f"{side} has no tokens")
        if len(prompt) >= max_len:
            raise BadRow(f"the prompt takes {len(prompt)} tokens, all of train.max_seq_len={max_len}: "
                          f"no {side} tokens left")
        longest = max(longest, full)
    return longest


def _checked(rows: list[dict], tokenizer, max_len: int, label: str, stats: PairStats) -> list[dict]:
    template = chat_template(tokenizer)
    kept = []
    for i, row in enumerate(rows, 1):
        try:
            if kept and isinstance(row["prompt"], str) != isinstance(kept[0]["prompt"], str):
                # one dataset is either text or messages throughout (the trainer's table holds one kind)
                raise BadRow("a text transcript among message rows" if isinstance(row["prompt"], str) else
                              "a message row among text transcripts")
            stats.lengths.append(_token_check(row, tokenizer, template, max_len))
            kept.append(row)
        except BadRow as err:
            stats.skipped += 1
            if len(stats.skipped_examples) < 5:
                stats.skipped_examples.append(f"{label} row {i}: {err}")
    return kept


def _unpair(rows: list[dict]) -> list[dict]:
    """Paired rows as unpaired ones, each pair's good and bad answer side by side.

    KTO reads its rows in order (its KL estimate pairs neighbours), so interleaving keeps good and bad
    answers in every batch rather than all good ones first.
    """
    out = []
    for row in rows:
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    return out


def build(cfg: RunConfig, tokenizer, *, paired: bool, max_bytes: int = MAX_BYTES) -> Pairs:
    """Load, check, count and split the run's preference rows.

    Args:
        paired: the objective needs pairs (DPO, ORPO, SimPO); unpaired objectives (KTO) take either kind.

    Raises:
        DataError: unreadable data, unpaired rows for a paired objective, or no row left (one line each).
    """
    spec, max_len = cfg.data, cfg.train.max_seq_len
    fmt, rows, skips = load(spec, max_bytes=max_bytes)
    if paired and fmt != "preference":
        raise DataError(f"{spec.path}: train.objective {cfg.train.objective.name} needs paired rows (prompt, chosen, "
                        "rejected); this data has unpaired rows (prompt, completion, label): use train.objective: kto")
    if not paired and fmt == "preference":
        rows = _unpair(rows)
    stats = PairStats(format=fmt, skipped=skips.count, skipped_examples=list(skips.examples), lengths=[],
                      max_seq_len=max_len)
    train_rows, eval_rows = split_rows(rows, spec.val_fraction, cfg.train.seed)
    if spec.val_path:
        eval_rows = eval_rows + load(spec, path=spec.val_path, max_bytes=max_bytes)[1]
    train = _checked(train_rows, tokenizer, max_len, "train", stats)
    lengths = list(stats.lengths)
    evals = _checked(eval_rows, tokenizer, max_len, "eval", stats) if eval_rows else []
    if not train:
        first = stats.skipped_examples[0] if stats.skipped_examples else "the data has no rows"
        raise DataError(f"{spec.path}: no preference rows left to train on; {stats.skipped} skipped (first: {first})")
    stats.lengths = lengths
    stats.rows, stats.eval_rows = len(train), len(evals)
    stats.truncated = sum(n > max_len for n in lengths)
    return Pairs(train, evals, stats)


def preview(cfg: RunConfig, tokenizer, n: int = 3, *, max_bytes: int = MAX_BYTES) -> tuple[str, list[tuple]]:
    """(format, the first ``n`` rows as (prompt, chosen, rejected-or-label) texts as the model reads them).

    Raises:
        DataError: the data cannot be read or holds no preference rows.
    """
    fmt, rows, _ = load(cfg.data, max_bytes=max_bytes)
    template = chat_template(tokenizer)
    prompt_text = (lambda p: p if isinstance(p, str) else
                   tokenizer.apply_chat_template(p, tokenize=False, chat_template=template, add_generation_prompt=True))
    shown = []
    for row in rows[:n]:
        second = row["rejected"] if "rejected" in row else ("good" if row["label"] else "bad")
        first = row["chosen"] if "chosen" in row else row["completion"]
        shown.append((prompt_text(row["prompt"]), _answer_text(first), _answer_text(second)))
    return fmt, shown


def _answer_text(answer) -> str:
    if isinstance(answer, str):
        return answer
    return "\n".join(m["content"] for m in answer)

