"""Row formats: detect which one a dataset uses and turn every row into chat messages or plain text.

A normalised row is either ``{"messages": [{"role": ..., "content": ...}, ...]}`` with roles
system/user/assistant, or ``{"text": ...}`` for continued pre-training. A row that cannot be normalised
raises _BadRow with the reason; the loader skips and counts it.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.data.sources import DataError, Record, Skips

__all__ = ["Format", "FORMATS", "ROLES", "detect", "normalise"]


@dataclass(frozen=True)
class Format:
    """A row format: the columns it needs, those it may have, and a one-line description."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    about: str = ""


# Detection tries these in order; the first whose required columns are present wins.
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("chat", ("messages",), (), "messages: a list of {role, content} (OpenAI style)"),
    Format("sharegpt", ("conversations",), ("system",), "conversations: a list of {from, value}"),
    Format("alpaca", ("instruction", "output"), ("input", "system"), "instruction, optional input, output"),
    Format("prompt_completion", ("prompt", "completion"), ("system",), "prompt and completion"),
    Format("text", ("text",), (), "text (continued pre-training)"),
)}

ROLES = ("system", "user", "assistant")
_ROLE_ALIASES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
                 "model": "assistant", "bot": "assistant"}


class _BadRow(Exception):
    """A row that cannot be used; the message says why."""


def _column(name: str, columns: dict) -> str:
    return str(columns.get(name, name))


def detect(records: list[Record], columns: dict, label: str, wanted: str = "auto") -> Format:
    """The format of ``records`` (or check the chosen one), from the columns the first rows have.

    Raises:
        DataError: no format fits, naming the columns found and those expected.
    """
    found: list[str] = []
    for rec in records[:200]:
        if isinstance(rec.data, dict):
            found += [str(k) for k in rec.data if str(k) not in found]
    candidates = FORMATS.values() if wanted == "auto" else [FORMATS[wanted]]
    for fmt in candidates:
        if all(_column(c, columns) in found for c in fmt.required):
            return fmt
    have = ", ".join(found[:20]) or "none"
    if wanted != "auto":
        need = ", ".join(_column(c, columns) for c in FORMATS[wanted].required)
        raise DataError(f"{label}: format {wanted} expects columns {need}; the data has: {have} "
                        "(map yours with data.columns, e.g. {instruction: question})")
    expected = "; ".join(f"{f.name}: {f.about}" for f in FORMATS.values())
    raise DataError(f"{label}: cannot tell the row format from the columns ({have}); expected one of "
                    f"[{expected}], or map your column names with data.columns")


def normalise(records: list[Record], fmt: Format, columns: dict, skips: Skips,
              system_prompt: str | None = None) -> list[dict]:
    """Turn raw records into normalised rows; rows that do not fit are skipped and counted."""
    out = []
    for rec in records:
        try:
            if not isinstance(rec.data, dict):
                raise _BadRow(f"expected an object with columns, got {type(rec.data).__name__}")
            row = _NORMALISERS[fmt.name](rec.data, columns)
            if "messages" in row and system_prompt and row["messages"][0]["role"] != "system":
                row["messages"].insert(0, {"role": "system", "content": system_prompt})
            out.append(row)
        except _BadRow as err:
            skips.add(f"{rec.where}: {err}")
    return out


def _text(value, what: str, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in value):
        value = "".join(p["text"] for p in value)  # OpenAI content parts: keep the text ones
    if not isinstance(value, str):
        if value is None:
            raise _BadRow(f"{what} is missing")
        raise _BadRow(f"{what} is {type(value).__name__}, expected text")
    if not optional and not value.strip():
        raise _BadRow(f"{what} is empty")
    return value


def _get(data: dict, name: str, columns: dict, *, optional: bool = False) -> str:
    key = _column(name, columns)
    if key not in data and not optional:
        raise _BadRow(f"column {key!r} is missing")
    return _text(data.get(key), key, optional=optional)


def _messages(items, role_key: str, content_key: str, what: str) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise _BadRow(f"{what} should be a non-empty list of messages")
    out = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise _BadRow(f"{what} item {i} is {type(item).__name__}, expected an object")
        keys = (role_key, content_key) if role_key in item else ("role", "content") if "role" in item else ("from", "value")
        raw_role = item.get(keys[0])
        role = _ROLE_ALIASES.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None
        if role is None:
            raise _BadRow(f"{what} item {i} has unknown role {raw_role!r} (expected one of {', '.join(ROLES)}, "
                          "or human/gpt)")
        out.append({"role": role, "content": _text(item.get(keys[1]), f"{what} item {i} content")})
    if all(m["role"] == "system" for m in out):
        raise _BadRow(f"{what} holds only system messages")
    return out


def _chat(data: dict, columns: dict) -> dict:
    key = _column("messages", columns)
    return {"messages": _messages(data.get(key), "role", "content", key)}


def _sharegpt(data: dict, columns: dict) -> dict:
    key = _column("conversations", columns)
    messages = _messages(data.get(key), "from", "value", key)
    system = _get(data, "system", columns, optional=True)
    if system.strip() and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages}


def _pair(system: str, user: str, answer: str) -> dict:
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return {"messages": messages + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _alpaca(data: dict, columns: dict) -> dict:
    instruction = _get(data, "instruction", columns)
    extra = _get(data, "input", columns, optional=True)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return _pair(_get(data, "system", columns, optional=True), user, _get(data, "output", columns))


def _prompt_completion(data: dict, columns: dict) -> dict:
    return _pair(_get(data, "system", columns, optional=True), _get(data, "prompt", columns),
                 _get(data, "completion", columns))


def _plain(data: dict, columns: dict) -> dict:
    return {"text": _get(data, "text", columns)}


_NORMALISERS = {"chat": _chat, "sharegpt": _sharegpt, "alpaca": _alpaca,
                "prompt_completion": _prompt_completion, "text": _plain}
