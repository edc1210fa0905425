"""RunStatus: the strings on disk, and which statuses are busy, ended, resumable or hold a result."""

from __future__ import annotations

import json

import pytest

from studio.status import RunStatus


def test_members_are_the_strings_written_in_state_json():
    assert [s.value for s in RunStatus] == ["queued", "loading", "training", "saving", "done", "stopped", "failed",
                                            "interrupted", "unknown"]
    assert RunStatus.DONE == "done" and "stopped" in (RunStatus.STOPPED,) and RunStatus.FAILED in ("failed",)
    assert f"{RunStatus.TRAINING:<9}|" == "training |"
    assert json.dumps({"status": RunStatus.SAVING}) == '{"status": "saving"}'
    assert RunStatus(json.loads('"interrupted"')) is RunStatus.INTERRUPTED


@pytest.mark.parametrize("value", [None, "", "Done", "weird", 3, ["done"]])
def test_anything_unrecognised_reads_as_unknown(value):
    status = RunStatus(value)
    assert status is RunStatus.UNKNOWN
    assert not (status.busy or status.working or status.ended or status.has_result or status.resumable)


def _having(prop: str) -> list[str]:
    return [s.value for s in RunStatus if getattr(s, prop)]


def test_each_group_of_statuses():
    assert _having("busy") == ["queued", "loading", "training", "saving"]
    assert _having("working") == ["loading", "training", "saving"]
    assert _having("ended") == ["done", "stopped", "failed", "interrupted"]
    assert _having("has_result") == ["done", "stopped"]
    assert _having("resumable") == ["stopped", "failed", "interrupted"]
