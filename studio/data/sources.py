"""Reading raw records from files, folders and the dataset hub.

Every way a file can be unreadable ends in one DataError naming the file and, where it helps, the line.
A JSON Lines file with a few broken lines is still used: each broken line is skipped, counted and
reported with its line number (a dataset with one stray line should not cost a run). A file where no
line parses at all is refused instead, since then it is not JSON Lines.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio import models
from studio.config import ConfigError

__all__ = ["DataError", "Record", "Skips", "MAX_BYTES", "SUFFIXES", "read_records", "hub_reachable"]

def _limit_from_env(default: int = 1 << 30) -> int:
    try:
        return int(float(os.environ.get("STUDIO_MAX_DATA_BYTES", default)))
    except ValueError:
        return default


MAX_BYTES = _limit_from_env()
"""Largest dataset (sum of its files) the studio reads; bigger ones are refused before reading."""

SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")
_SHOWN = 5  # how many skip reasons are kept for display


class DataError(ConfigError):
    """A dataset that cannot be read or used, with the reason in one line."""


@dataclass
class Record:
    """One raw row and where it came from (e.g. 'train.jsonl line 7')."""

    where: str
    data: Any


@dataclass
class Skips:
    """Rows left out, with the first few reasons kept for display."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.examples) < _SHOWN:
            self.examples.append(reason)


def read_records(path: str, *, hub_config: str | None = None, split: str = "train",
                 max_bytes: int = MAX_BYTES, skips: Skips | None = None) -> list[Record]:
    """Raw records from a file, a folder of files, or a hub dataset name.

    Args:
        path: a .json/.jsonl/.csv/.tsv/.parquet file, a folder of them, or a hub dataset name.
        hub_config: the hub dataset's configuration name.
        split: the hub dataset split.
        max_bytes: refuse local data larger than this, before reading any of it.
        skips: collects lines that could not be parsed (JSON Lines only).

    Raises:
        DataError: the source is missing, too large, or not readable as its format.
    """
    skips = skips if skips is not None else Skips()
    target = Path(path).expanduser()
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(f"{path}: the folder holds no {'/'.join(SUFFIXES)} files")
        _check_size(files, max_bytes, path)
        return [r for f in files for r in _read_file(f, skips)]
    if target.is_file():
        _check_size([target], max_bytes, path)
        return _read_file(target, skips)
    if _looks_local(path):
        raise DataError(f"{path}: no such file or folder")
    return _read_hub(path, hub_config, split)


def _looks_local(path: str) -> bool:
    return (not path.strip() or path.startswith((".", "/", "~")) or path.count("/") > 1
            or Path(path).suffix.lower() in SUFFIXES or "\\" in path)


def _check_size(files: list[Path], max_bytes: int, label: str) -> None:
    # st_size only: a sparse 2 GB file is refused without a byte of it being read
    total = sum(f.stat().st_size for f in files)
    if total > max_bytes:
        raise DataError(f"{label}: {_human(total)} is over the {_human(max_bytes)} limit for datasets; "
                        "use a smaller file or raise the limit (STUDIO_MAX_DATA_BYTES)")


def _human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _read_file(path: Path, skips: Skips) -> list[Record]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    text = _decode(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, text, "\t" if suffix == ".tsv" else ",")
    if suffix == ".json":
        return _read_json(path, text, skips)
    return _read_jsonl(path, text, skips)


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # -sig: a byte-order mark (Excel's CSV export) is dropped
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); "
                        "save the file as UTF-8") from None


def _read_jsonl(path: Path, text: str, skips: Skips) -> list[Record]:
    out: list[Record] = []
    first_error = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            out.append(Record(where, json.loads(line)))
        except (ValueError, RecursionError) as err:  # ValueError: JSONDecodeError, or an int of 4300+ digits
            reason = f"{where}: not valid JSON ({_json_reason(err)})"
            first_error = first_error or reason
            skips.add(reason)
    if not out:
        raise DataError(f"{first_error}; the file is not JSON Lines (one JSON object per line)")
    return out


def _json_reason(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return err.msg
    return "nested too deeply" if isinstance(err, RecursionError) else _first_line(err)[:80]


def _read_json(path: Path, text: str, skips: Skips) -> list[Record]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several JSON values one after another: JSON Lines named .json
            return _read_jsonl(path, text, skips)
        raise DataError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (ValueError, RecursionError) as err:
        raise DataError(f"{path}: not usable JSON ({_json_reason(err)})") from None
    if isinstance(data, dict):
        lists = [v for k, v in data.items() if k in ("data", "rows", "examples", "train") and isinstance(v, list)]
        data = lists[0] if lists else [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of objects, got a JSON {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: the file holds an empty list")
    return [Record(f"{path.name} item {i}", row) for i, row in enumerate(data, 1)]


def _read_csv(path: Path, text: str, delimiter: str) -> list[Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    out: list[Record] = []
    try:
        names = reader.fieldnames
        if not names or not any(n and n.strip() for n in names):
            raise DataError(f"{path}: the first line should name the columns")
        for row in reader:
            out.append(Record(f"{path.name} line {reader.line_num}", row))
    except csv.Error as err:
        raise DataError(f"{path}: not valid CSV (line {reader.line_num + 1}: {err})") from None
    if not out:
        raise DataError(f"{path}: the CSV has a header but no rows")
    return out


def _read_parquet(path: Path) -> list[Record]:
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(err)})") from None
    if not rows:
        raise DataError(f"{path}: the Parquet file has no rows")
    return [Record(f"{path.name} row {i}", row) for i, row in enumerate(rows, 1)]


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


_OFFLINE_WORDS = ("offline", "connection", "network", "max retries", "couldn't reach", "name or service",
                  "timed out", "temporary failure", "couldn't find", "cannot find", "not find")


def hub_reachable() -> bool:
    """Whether the dataset hub can be reached: not when HF_DATASETS_OFFLINE / HF_HUB_OFFLINE says so, else the
    model hub's quick probe (``models.hub_reachable``: the same host), so an offline machine answers in seconds."""
    if os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    return models.hub_reachable()


_UNREACHABLE = ("the dataset hub is not reachable from here; download the data on a machine with internet "
                "and give its file or folder as data.path")


def _read_hub(name: str, config: str | None, split: str) -> list[Record]:
    if not hub_reachable():
        raise DataError(f"{name}: {_UNREACHABLE}")
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # the hub client raises many types; each becomes one line
        text = _first_line(err)
        if any(w in text.lower() for w in _OFFLINE_WORDS):
            raise DataError(f"{name}: no such dataset on the hub, or the hub is not reachable ({text})") from None
        raise DataError(f"{name}: cannot load the hub dataset ({type(err).__name__}: {text})") from None
    return [Record(f"{name} row {i}", row) for i, row in enumerate(ds, 1)]
