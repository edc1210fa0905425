"""``python -m studio train`` on bad dataset files, run through the CLI's own entry point.

Each refusal ends in exactly one ``error:`` line on stderr and exit code 2, never a traceback. A file
that trains although some rows were left out or cut short says so in one ``warning:`` line: how many
rows, and the first reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from studio import cli

ROOT = Path(__file__).resolve().parent.parent


def _chat(i: int, role: str = "user", content: object = None) -> dict:
    return {"messages": [{"role": role, "content": f"question {i}?" if content is None else content},
                         {"role": "assistant", "content": f"answer {i}."}]}


def _jsonl(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _preset(tmp_path: Path, model_dir: Path, data: Path) -> Path:
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({
        "model": {"id": str(model_dir)}, "data": {"path": str(data)},
        "train": {"max_steps": 1, "precision": "fp32", "max_seq_len": 128, "output_dir": str(tmp_path / "runs")}}))
    return preset


def run_cli(capsys, tmp_path, model_dir, data: Path, *sets: str) -> tuple[int, list[str], list[str]]:
    """``python -m studio train --quiet`` on ``data``: exit code, stdout lines, the stderr lines we print."""
    args = ["train", str(_preset(tmp_path, model_dir, data)), "--quiet"] + [a for s in sets for a in ("--set", s)]
    code = cli.main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith(("error:", "warning:"))]
    return code, out.strip().splitlines(), ours


REFUSED = {
    "empty.jsonl": ("", "empty.jsonl: the file is empty"),
    "prose.jsonl": ("This is a note about the data.\nIt is not JSON.\n",
                    "prose.jsonl line 1: not valid JSON (Expecting value); the file is not JSON Lines"),
    "columns.jsonl": (_jsonl([{"question": "q", "reply": "r"}] * 3),
                      "columns.jsonl: cannot tell the row format from the columns (question, reply)"),
    "roles.jsonl": (_jsonl([_chat(i, role="wizard") for i in range(3)]),
                    "roles.jsonl: no usable rows; 3 skipped (first: roles.jsonl line 1: messages item 1 has "
                    "unknown role 'wizard'"),
    "content.jsonl": (_jsonl([_chat(i, content=i) for i in range(3)]),
                      "content.jsonl: no usable rows; 3 skipped (first: content.jsonl line 1: "),
    "latin1.jsonl": (_jsonl([_chat(0)]).encode() + '{"text": "caf\xe9"}\n'.encode("latin-1"),
                     "latin1.jsonl: not UTF-8 text (byte 0xe9 on line 2); save the file as UTF-8"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_bad_dataset_is_one_error_line(capsys, tmp_path, tiny_dirs, name):
    text, expected = REFUSED[name]
    data = tmp_path / name
    data.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    code, _, lines = run_cli(capsys, tmp_path, tiny_dirs["llama"], data)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expected in lines[0].replace(str(tmp_path) + "/", ""), lines[0]


def test_a_file_over_the_size_limit_is_refused(tmp_path, tiny_dirs):
    """The limit is read from STUDIO_MAX_DATA_BYTES when the studio starts, so this one is a real process."""
    data = tmp_path / "big.jsonl"
    data.write_text(_jsonl([_chat(i) for i in range(100)]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDIO_MAX_DATA_BYTES": "1024", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "studio", "train", str(_preset(tmp_path, tiny_dirs["llama"], data)),
                           "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert lines == [f"error: {data}: {data.stat().st_size / 1024:.1f} KB is over the 1.0 KB limit for datasets; "
                     "use a smaller file or raise the limit (STUDIO_MAX_DATA_BYTES)"]


def test_a_broken_line_in_the_middle_trains_and_is_reported(capsys, tmp_path, tiny_dirs):
    data = tmp_path / "b.jsonl"
    data.write_text(_jsonl([_chat(0), _chat(1), '{"messages": [{"role": "user", "content": "cut', _chat(3)]))
    code, out, lines = run_cli(capsys, tmp_path, tiny_dirs["llama"], data)
    assert code == 0 and Path(out[-1]).is_dir()
    assert len(lines) == 1 and lines[0].startswith("warning: 1 row skipped (first: b.jsonl line 3: not valid JSON")


def test_rows_with_unknown_roles_or_non_text_are_skipped_and_reported(capsys, tmp_path, tiny_dirs):
    data = tmp_path / "mixed.jsonl"
    data.write_text(_jsonl([_chat(0), _chat(1, role="wizard"), _chat(2), _chat(3, content=42), _chat(4)]))
    code, out, lines = run_cli(capsys, tmp_path, tiny_dirs["llama"], data)
    assert code == 0 and Path(out[-1]).is_dir()
    assert lines == ["warning: 2 rows skipped (first: mixed.jsonl line 2: messages item 1 has unknown role 'wizard' "
                     "(expected one of system, user, assistant, or human/gpt))"]


def test_rows_over_max_seq_len_are_cut_and_reported(capsys, tmp_path, tiny_dirs):
    data = tmp_path / "long.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"question {i}?"},
                          {"role": "assistant", "content": "yes " * (5 + 30 * (i % 2))}]} for i in range(4)]
    data.write_text(_jsonl(rows))
    code, out, lines = run_cli(capsys, tmp_path, tiny_dirs["llama"], data, "train.max_seq_len=100")
    assert code == 0 and Path(out[-1]).is_dir()
    assert lines == ["warning: 2 rows longer than train.max_seq_len=100 tokens cut to it (the rest is not trained)"]


def test_a_csv_with_a_byte_order_mark_trains(capsys, tmp_path, tiny_dirs):
    data = tmp_path / "bom.csv"
    data.write_bytes("\ufeffprompt,completion\nWhat is 2+2?,4\nSay hi,hi\n".encode("utf-8"))
    code, out, lines = run_cli(capsys, tmp_path, tiny_dirs["llama"], data)
    assert code == 0 and lines == []
    run_dir = Path(out[-1])
    assert json.loads((run_dir / "state.json").read_text())["status"] == "done"


def test_an_unexpected_error_is_one_line(capsys, tmp_path, tiny_dirs):
    """A run folder whose adapter config no longer matches its weights: torch's many-line error, cut to one."""
    from runfolders import make_run

    run = make_run(tmp_path / "runs", tiny_dirs["llama"])
    config = run / "adapter" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "r": 3}))
    code = cli.main(["chat", str(run), "--prompt", "hi", "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and "Traceback" not in err and len(lines) == 1
    assert lines[0].startswith("error: RuntimeError: Error(s) in loading state_dict for ")
    assert lines[0].endswith(" (set STUDIO_DEBUG=1 for the traceback)")
    assert "size mismatch" not in err, "the lines after the first are printed too"
