"""Prompt-only rows for objectives that write their own answers (GRPO): a prompt plus the columns rewards read.

Accepted row shapes (column names mapped through ``data.columns`` like the other formats):

- ``{prompt, ...}``: ``prompt`` is text or a message list ending with a user turn;
- ``{messages, ...}``: a message list ending with a user turn (a chat row without its answer).

Every other column is kept as text (``answer``, ``solution``...) and handed to the rewards, which read the
column they name (a ``match`` reward's ``column``). A row that cannot train is skipped with its reason: no
prompt, a conversation that ends with the model's turn, a missing answer column value, or a prompt over
``train.max_seq_len`` tokens (TRL does not cut prompts, so a long one would take all the memory).

    prompts = build(cfg, tokenizer, needs=["answer"])   # .train / .eval rows for TRL, .stats (a PairStats)
    fmt, shown = preview(cfg, tokenizer, n=3)            # [(prompt as the model reads it, answer column)]
"""

from __future__ import annotations

from studio.config import DataSpec, RunConfig
from studio.data import split_rows
from studio.data.formats import ROLES, Format
from studio.data.preference import BadRow, PairStats, Pairs, normalise_records
from studio.data.sources import MAX_BYTES, DataError, Record, Skips, read_records
from studio.data.tokenize import chat_template

__all__ = ["PROMPT_FORMAT", "detect", "load", "build", "preview"]

PROMPT_FORMAT = Format("prompts", ("prompt",), ("messages", "system"),
                       "prompt (text or messages ending with a user turn) or messages ending with a user turn, "
                       "plus the columns the rewards read")


def _col(name: str, columns: dict) -> str:
    return str(columns.get(name, name))


def detect(records: list[Record], columns: dict) -> str | None:
    """'prompt' or 'messages': the column the prompts come from, or None when the rows have neither."""
    found = {str(k) for rec in records[:200] if isinstance(rec.data, dict) for k in rec.data}
    for key in ("prompt", "messages"):
        if _col(key, columns) in found:
            return key
    return None


def _messages(value, what: str) -> list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise BadRow(f"{what} is empty")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadRow(f"{what} is {'missing' if value is None else 'empty' if value == [] else type(value).__name__}")
    out = []
    for i, item in enumerate(value, 1):
        role = item.get("role") if isinstance(item, dict) else None
        content = item.get("content") if isinstance(item, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise BadRow(f"{what} item {i} is not a {{role, content}} message")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise BadRow(f"{what} ends with a {out[-1]['role']} turn; a prompt ends with the user's turn")
    return out


def _row(data: dict, key: str, columns: dict, needs: list[str], system: str | None) -> dict:
    prompt = _messages(data.get(_col(key, columns)), _col(key, columns))
    own = data.get(_col("system", columns))
    system = own if isinstance(own, str) and own.strip() else system
    if system and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system}] + prompt
    row = {"prompt": prompt}
    for name in needs:
        value = data.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise BadRow(f"{name} is {'missing' if value is None else 'empty'}")
    for k, v in data.items():  # the other columns go to the rewards as text (one type per column for the table)
        if k not in (_col(key, columns), _col("system", columns), "prompt"):
            row[str(k)] = v if isinstance(v, str) else str(v)
    return row


def load(spec: DataSpec, needs: list[str] = (), *, path: str | None = None,
         max_bytes: int = MAX_BYTES) -> tuple[list[dict], Skips]:
    """(rows, skips) of a prompt dataset; ``needs`` are the columns the rewards read.

    Raises:
        DataError: unreadable source, no prompt column, or a column the rewards read that the data lacks.
    """
    source = path or spec.path
    skips = Skips()
    records = read_records(source, hub_config=spec.hub_config, split=spec.split, max_bytes=max_bytes, skips=skips)
    columns = spec.columns or {}
    key = detect(records, columns)
    have = sorted({str(k) for r in records[:200] if isinstance(r.data, dict) for k in r.data})
    if key is None:
        raise DataError(f"{source}: GRPO needs prompt rows; the data has columns {', '.join(have[:20]) or 'none'} "
                        f"(expected {PROMPT_FORMAT.about}; map yours with data.columns)")
    missing = [c for c in needs if c not in have]
    if missing:
        raise DataError(f"{source}: train.rewards read the column {missing[0]!r}, which the data lacks "
                        f"(it has {', '.join(have[:20])})")
    rows = normalise_records(records, lambda data: _row(data, key, columns, list(needs), spec.system_prompt), skips,
                             spec.max_rows)
    return rows, skips


def _prompt_ids(tokenizer, template: str, prompt: list[dict]) -> list[int]:
    text = tokenizer.apply_chat_template(prompt, tokenize=False, chat_template=template, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _checked(rows: list[dict], tokenizer, max_len: int, label: str, stats: PairStats) -> list[dict]:
    template = chat_template(tokenizer)
    kept = []
    for i, row in enumerate(rows, 1):
        n = len(_prompt_ids(tokenizer, template, row["prompt"]))
        if n > max_len:
            stats.skipped += 1
            if len(stats.skipped_examples) < 5:
                stats.skipped_examples.append(f"{label} row {i}: the prompt takes {n} tokens, over "
                                              f"train.max_seq_len={max_len}")
            continue
        stats.lengths.append(n)
        kept.append(row)
    return kept


def build(cfg: RunConfig, tokenizer, needs: list[str] = (), *, max_bytes: int = MAX_BYTES) -> Pairs:
    """Load, check, count and split the run's prompt rows.

    Args:
        needs: the columns the rewards read; a row without a value there is skipped.

    Raises:
        DataError: unreadable data, a missing column, or no row left (one line each).
    """
    spec, max_len = cfg.data, cfg.train.max_seq_len
    rows, skips = load(spec, needs, max_bytes=max_bytes)
    stats = PairStats(format="prompts", skipped=skips.count, skipped_examples=list(skips.examples), lengths=[],
                      max_seq_len=max_len)
    train_rows, eval_rows = split_rows(rows, spec.val_fraction, cfg.train.seed)
    if spec.val_path:
        eval_rows = eval_rows + load(spec, needs, path=spec.val_path, max_bytes=max_bytes)[0]
    train = _checked(train_rows, tokenizer, max_len, "train", stats)
    lengths = list(stats.lengths)
    evals = _checked(eval_rows, tokenizer, max_len, "eval", stats) if eval_rows else []
    if not train:
        first = stats.skipped_examples[0] if stats.skipped_examples else "the data has no rows"
        raise DataError(f"{spec.path}: no prompt rows left to train on; {stats.skipped} skipped (first: {first})")
    stats.lengths, stats.rows, stats.eval_rows = lengths, len(train), len(evals)
    return Pairs(train, evals, stats)


def preview(cfg: RunConfig, tokenizer, n: int = 3, needs: list[str] = (), *,
            max_bytes: int = MAX_BYTES) -> tuple[str, list[tuple]]:
    """('prompts', the first ``n`` rows as (prompt as the model reads it, the first column a reward reads)).

    Raises:
        DataError: the data cannot be read, holds no prompts, or lacks a column the rewards read.
    """
    rows, _ = load(cfg.data, needs, max_bytes=max_bytes)
    template = chat_template(tokenizer)
    shown = []
    for row in rows[:n]:
        text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, chat_template=template,
                                             add_generation_prompt=True)
        shown.append((text, row.get(needs[0], "") if needs else ""))
    return "prompts", shown
