"""Data loading: every source kind, every row format, column mapping, and each bad input gets one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from studio.config import ConfigError, DataSpec
from studio.data import DataError, load_rows
from studio.data import sources

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
USER_HI = {"role": "user", "content": "hi"}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _load(path: Path, **kw):
    return load_rows(DataSpec(path=str(path), **kw))


# --- sources -------------------------------------------------------------------------------------

def test_identity_preset_loads_as_chat():
    rows = load_rows(DataSpec())
    assert rows.format == "chat" and len(rows.rows) == 40 and rows.skipped == 0


def test_json_list_and_wrapped(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([CHAT, CHAT]))
    (tmp_path / "b.json").write_text(json.dumps({"data": [CHAT]}))
    assert len(_load(tmp_path / "a.json").rows) == 2
    assert len(_load(tmp_path / "b.json").rows) == 1


def test_json_lines_named_json(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(CHAT) + "\n" + json.dumps(CHAT) + "\n")
    assert len(_load(path).rows) == 2


def test_csv_tsv_and_parquet(tmp_path):
    rows = [{"instruction": "Add 2 and 2", "input": "", "output": "4"}, {"instruction": "Say hi", "input": "x", "output": "hi"}]
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "a.tsv").write_text("prompt\tcompletion\nq\ta\n", encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"text": "some text"}, {"text": "more"}]), tmp_path / "a.parquet")
    got = _load(tmp_path / "a.csv")
    assert got.format == "alpaca"
    assert got.rows[1]["messages"] == [{"role": "user", "content": "Say hi\n\nx"}, {"role": "assistant", "content": "hi"}]
    assert _load(tmp_path / "a.tsv").format == "prompt_completion"
    assert _load(tmp_path / "a.parquet").rows == [{"text": "some text"}, {"text": "more"}]


def test_folder_reads_every_file(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [CHAT])
    (tmp_path / "b.json").write_text(json.dumps([CHAT, CHAT]))
    (tmp_path / "notes.txt").write_text("ignored")
    assert len(_load(tmp_path).rows) == 3


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="holds no"):
        _load(tmp_path)


def test_missing_local_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        _load(tmp_path / "nope.jsonl")


def test_hub_unreachable_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DataError, match="hub is not reachable") as err:
        load_rows(DataSpec(path="someone/some-dataset"))
    assert time.perf_counter() - start < 10 and "\n" not in str(err.value)


# --- formats ---------------------------------------------------------------------------------------

def test_sharegpt_with_system(tmp_path):
    row = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "hi"},
                             {"from": "gpt", "value": "yo"}]}
    got = _load(_jsonl(tmp_path / "s.jsonl", [row]))
    assert got.format == "sharegpt"
    assert [m["role"] for m in got.rows[0]["messages"]] == ["system", "user", "assistant"]


def test_alpaca_system_and_prompt_completion(tmp_path):
    got = _load(_jsonl(tmp_path / "a.jsonl", [{"instruction": "i", "output": "o", "system": "s"}]))
    assert got.rows[0]["messages"][0] == {"role": "system", "content": "s"}
    got = _load(_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "completion": "c"}]))
    assert got.format == "prompt_completion" and got.rows[0]["messages"][-1]["content"] == "c"


def test_text_format(tmp_path):
    got = _load(_jsonl(tmp_path / "t.jsonl", [{"text": "once upon a time"}]))
    assert got.format == "text" and got.rows == [{"text": "once upon a time"}]


def test_openai_content_parts(tmp_path):
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                        {"role": "assistant", "content": "c"}]}
    assert _load(_jsonl(tmp_path / "c.jsonl", [row])).rows[0]["messages"][0]["content"] == "ab"


def test_column_mapping(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"question": "q?", "answer": "a."}])
    got = _load(path, columns={"prompt": "question", "completion": "answer"})
    assert got.format == "prompt_completion" and got.rows[0]["messages"][1]["content"] == "a."


def test_format_can_be_chosen(tmp_path):
    # a row with both 'text' and 'prompt'/'completion' is prompt_completion by detection, text by choice
    path = _jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "completion": "c", "text": "t"}])
    assert _load(path).format == "prompt_completion"
    assert _load(path, format="text").rows == [{"text": "t"}]


def test_system_prompt_added_where_missing(tmp_path):
    got = _load(_jsonl(tmp_path / "a.jsonl", [CHAT]), system_prompt="You are Quill.")
    assert got.rows[0]["messages"][0] == {"role": "system", "content": "You are Quill."}


def test_max_rows(tmp_path):
    assert len(_load(_jsonl(tmp_path / "a.jsonl", [CHAT] * 5), max_rows=2).rows) == 2


# --- bad inputs: one readable line each ------------------------------------------------------------

def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert isinstance(err.value, ConfigError) and "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("name", ["e.jsonl", "e.json", "e.csv"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_text("  \n")
    with pytest.raises(DataError) as err:
        _load(tmp_path / name)
    assert "empty" in _one_line(err)


def test_not_json_at_all(tmp_path):
    (tmp_path / "x.jsonl").write_text("hello there\nthis is prose\n")
    (tmp_path / "x.json").write_text('[{"a": 1},\n{"a": 2\n')
    with pytest.raises(DataError) as err:
        _load(tmp_path / "x.jsonl")
    assert "line 1" in _one_line(err) and "not JSON Lines" in str(err.value)
    with pytest.raises(DataError) as err:
        _load(tmp_path / "x.json")
    assert "not valid JSON (line 3" in _one_line(err)


def test_broken_line_in_the_middle_is_skipped_and_reported(tmp_path):
    # Decision: a stray broken line costs that row only; its line number is reported in skipped_examples
    lines = [json.dumps(CHAT), json.dumps(CHAT), '{"messages": [oops', json.dumps(CHAT)]
    (tmp_path / "b.jsonl").write_text("\n".join(lines))
    got = _load(tmp_path / "b.jsonl")
    assert len(got.rows) == 3 and got.skipped == 1
    assert got.skipped_examples[0].startswith("b.jsonl line 3: not valid JSON")


def test_wrong_columns_name_found_and_expected(tmp_path):
    path = _jsonl(tmp_path / "w.jsonl", [{"question": "q", "reply": "r"}])
    with pytest.raises(DataError) as err:
        _load(path)
    text = _one_line(err)
    assert "question, reply" in text and "instruction" in text and "messages" in text
    with pytest.raises(DataError) as err:
        _load(path, format="alpaca")
    assert "expects columns instruction, output; the data has: question, reply" in _one_line(err)


def test_unknown_role_and_non_string_content_are_skipped(tmp_path):
    bad_role = {"messages": [USER_HI, {"role": "wizard", "content": "x"}]}
    bad_content = {"messages": [USER_HI, {"role": "assistant", "content": 42}]}
    got = _load(_jsonl(tmp_path / "r.jsonl", [CHAT, bad_role, bad_content, "just a string"]))
    assert len(got.rows) == 1 and got.skipped == 3
    assert "unknown role 'wizard'" in got.skipped_examples[0]
    assert "content is int, expected text" in got.skipped_examples[1]
    assert "expected an object" in got.skipped_examples[2]


def test_all_rows_bad_is_an_error(tmp_path):
    path = _jsonl(tmp_path / "r.jsonl", [{"messages": [{"role": "wizard", "content": "x"}]}])
    with pytest.raises(DataError) as err:
        _load(path)
    assert "no usable rows" in _one_line(err) and "wizard" in str(err.value)


def test_empty_and_missing_values_are_skipped(tmp_path):
    rows = [{"instruction": "i", "output": ""}, {"instruction": "i"}, {"instruction": None, "output": "o"},
            {"instruction": "i", "output": "o"}]
    got = _load(_jsonl(tmp_path / "a.jsonl", rows))
    assert len(got.rows) == 1 and got.skipped == 3
    assert "output is empty" in got.skipped_examples[0] and "missing" in got.skipped_examples[1]


def test_file_over_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "big.jsonl"
    subprocess.run(["truncate", "-s", "2G", str(big)], check=True)  # sparse: no disk used

    def never(*_a, **_k):
        raise AssertionError("the file was read")

    monkeypatch.setattr(sources, "_decode", never)
    monkeypatch.setattr(Path, "read_bytes", never)
    with pytest.raises(DataError) as err:
        _load(big)
    assert "2.0 GB is over the 1.0 GB limit" in _one_line(err)
    with pytest.raises(DataError, match="over the 1.0 KB limit"):
        load_rows(DataSpec(path=str(_jsonl(tmp_path / "s.jsonl", [CHAT] * 40))), max_bytes=1024)


def test_non_utf8_bytes(tmp_path):
    (tmp_path / "l.jsonl").write_bytes(json.dumps(CHAT).encode() + b"\n" + '{"text": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(DataError) as err:
        _load(tmp_path / "l.jsonl")
    assert "not UTF-8 text (byte 0xe9 on line 2)" in _one_line(err)


def test_csv_with_bom(tmp_path):
    (tmp_path / "b.csv").write_bytes("\ufeffprompt,completion\nq,a\n".encode("utf-8"))
    got = _load(tmp_path / "b.csv")
    assert got.format == "prompt_completion" and len(got.rows) == 1


def test_csv_broken_and_header_only(tmp_path):
    (tmp_path / "n.csv").write_text("prompt,completion\nq,a\n\"q\"x,a\n")
    with pytest.raises(DataError) as err:
        _load(tmp_path / "n.csv")
    assert "not valid CSV (line 3" in _one_line(err)
    (tmp_path / "h.csv").write_text("prompt,completion\n")
    with pytest.raises(DataError, match="header but no rows"):
        _load(tmp_path / "h.csv")


def test_damaged_parquet(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError) as err:
        _load(tmp_path / "d.parquet")
    assert "not a readable Parquet file" in _one_line(err)


def test_limit_from_environment(monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_DATA_BYTES", "2048")
    assert sources._limit_from_env() == 2048
    monkeypatch.setenv("STUDIO_MAX_DATA_BYTES", "lots")
    assert sources._limit_from_env() == 1 << 30
    assert os.environ["STUDIO_MAX_DATA_BYTES"] == "lots"
