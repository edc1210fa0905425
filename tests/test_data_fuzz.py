"""Property tests: whatever bytes a person uploads, the loader returns rows or raises DataError, nothing else."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import tiny_tokenizer
from studio.config import DataSpec
from studio.data import DataError, load_rows, tokenize_rows

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["messages", "role", "content", "from", "value", "conversations", "instruction", "input",
                         "output", "prompt", "completion", "text", "system", "x"]), inner, max_size=4),
    max_leaves=20,
)


def _load_bytes(data: bytes, suffix: str, **spec):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(data)
        try:
            got = load_rows(DataSpec(path=str(path), **spec))
        except DataError as err:
            assert str(err) and "\n" not in str(err)
            return None
        return got


@_SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".parquet"]))
@example(data=b"1" * 5000, suffix=".jsonl")  # json refuses ints of 4300+ digits with a plain ValueError
@example(data=b"1" * 5000, suffix=".json")
@example(data=b"[" * 100_000, suffix=".json")  # nesting deep enough for RecursionError
@example(data=b"[" * 100_000, suffix=".jsonl")
@example(data=b'a,b\n"' + b"x" * 200_000 + b'"\n', suffix=".csv")  # a field over csv's size limit
def test_arbitrary_bytes_never_crash_the_loader(data, suffix):
    _load_bytes(data, suffix)


@_SETTINGS
@given(rows=st.lists(_json_values, min_size=1, max_size=5), suffix=st.sampled_from([".jsonl", ".json"]),
       fmt=st.sampled_from(["auto", "chat", "sharegpt", "alpaca", "prompt_completion", "text"]))
def test_arbitrary_json_rows_give_rows_or_data_error(rows, suffix, fmt):
    if suffix == ".jsonl":
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    else:
        data = json.dumps(rows).encode()
    got = _load_bytes(data, suffix, format=fmt)
    if got is not None:
        # whatever got through is well-formed and tokenizes without error
        for row in got.rows:
            assert set(row) in ({"messages"}, {"text"})
        tokenize_rows(got.rows, tiny_tokenizer(), max_len=64)


@_SETTINGS
@given(text=st.text(max_size=300))
def test_arbitrary_csv_text(text):
    _load_bytes(text.encode("utf-8"), ".csv")
