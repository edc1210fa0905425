"""Chat session rules without a browser: one engine per base in a holder, stale results, the system-prompt
fallback and the one system-message rule, one message to every pane, the adapter bookkeeping's stamps."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from studio import chat_session
from studio.chat import with_system
from studio.chat_adapters import BASE, result_stamp
from studio.chat_stream import GenSettings
from studio.config import ConfigError
from tests.runfolders import make_run

GREEDY = GenSettings(max_new_tokens=4, greedy=True)


@dataclass
class Holder:
    chat: Any = None
    chat_key: tuple | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def test_with_system_inserts_once_and_leaves_the_input_alone():
    talk = [{"role": "user", "content": "hi"}]
    assert with_system(talk, "Be brief.") == [{"role": "system", "content": "Be brief."}, *talk]
    assert talk == [{"role": "user", "content": "hi"}]  # a new list: the caller's history is not changed
    own = [{"role": "system", "content": "mine"}, *talk]
    assert with_system(own, "Be brief.") == own  # a conversation that brings its own keeps it
    assert with_system(talk, "") == talk and with_system(talk, None) == talk
    assert with_system([], "s") == [{"role": "system", "content": "s"}]


def test_system_text_typed_else_the_runs_own(tmp_path, tiny_dirs):
    trained = make_run(tmp_path, tiny_dirs["llama"], "trained", data={"system_prompt": " You are the bot. "})
    plain = make_run(tmp_path, tiny_dirs["llama"], "plain", seed=2)
    assert chat_session.system_text("  Be brief. ", str(trained)) == "Be brief."
    assert chat_session.system_text("", str(trained)) == "You are the bot."
    assert chat_session.system_text(None, str(plain)) == "" and chat_session.system_text("", None) == ""


def test_one_engine_per_base_and_runs_of_another_base_left_out(tmp_path, tiny_dirs):
    holder = Holder()
    llama = [str(make_run(tmp_path, tiny_dirs["llama"], n, seed=s)) for n, s in (("a", 1), ("b", 2))]
    qwen = str(make_run(tmp_path, tiny_dirs["qwen2"], "q"))
    engine, names, notes = chat_session.open_panes(holder, "", [llama[0], None, llama[0]])
    assert names == ["a", None, None] and notes == ["a already answers in another pane."]
    assert holder.chat is engine and holder.chat_key == chat_session.engine_key(engine.spec)
    again, names, notes = chat_session.open_panes(holder, "", [llama[1], qwen])
    assert again is engine and names == ["b", None] and "q is left out" in notes[0]
    assert engine.adapters() == ["a", "b"]
    other, names, _ = chat_session.open_panes(holder, "", [qwen])
    assert other is not engine and holder.chat is other and names == ["q"]  # a new base replaces the engine


def test_a_result_written_again_is_loaded_afresh(tmp_path, tiny_dirs):
    holder = Holder()
    run = make_run(tmp_path, tiny_dirs["llama"], "again", seed=1)
    engine, _, _ = chat_session.open_panes(holder, "", [str(run)])
    first = result_stamp(run / "adapter")
    assert engine.holds("again", run)
    shutil.rmtree(run)
    make_run(tmp_path, tiny_dirs["llama"], "again", seed=7)
    assert not engine.holds("again", run) and result_stamp(run / "adapter") != first
    same, names, _ = chat_session.open_panes(holder, "", [str(run)])
    assert same is engine and names == ["again"] and engine.holds("again", run)


def test_answer_in_panes_appends_where_a_model_answers(tmp_path, tiny_dirs, monkeypatch):
    holder = Holder()
    run = str(make_run(tmp_path, tiny_dirs["llama"], "tuned"))
    engine, names, _ = chat_session.open_panes(holder, "", [run, None])
    seen = []
    encode = engine.encode
    monkeypatch.setattr(engine, "encode", lambda messages: seen.append(messages) or encode(messages))
    earlier = [{"role": "user", "content": "before"}, {"role": "assistant", "content": "yes"}]
    updates = list(chat_session.answer_in_panes(engine, names, [[], list(earlier), earlier], "hi", "Be brief.",
                                                GREEDY))
    base, tuned, untouched = updates[-1]
    assert [m["role"] for m in base] == ["user", "assistant"] and base[0]["content"] == "hi"
    assert tuned[:3] == [*earlier, {"role": "user", "content": "hi"}] and tuned[-1]["role"] == "assistant"
    assert untouched is earlier  # no run in that pane: nothing sent, nothing added
    assert len(seen) == 2 and all(m[0] == {"role": "system", "content": "Be brief."} for m in seen)
    assert set(engine.last_tokens) == {BASE, "tuned"}


def test_evaluate_prompts_without_prompts_is_one_config_error(tmp_path, tiny_dirs):
    holder = Holder()
    run = str(make_run(tmp_path, tiny_dirs["llama"], "evaluated"))
    engine, names, _ = chat_session.open_panes(holder, "", [run])
    with pytest.raises(ConfigError, match="no prompts: type some, one per line, or tick"):
        chat_session.evaluate_prompts(engine, names[0], run, " \n=> only a reference\n", False, "", 4)
    with pytest.raises(ConfigError, match="this run has no held-out split"):
        chat_session.evaluate_prompts(engine, names[0], run, "", True, "", 4)


def test_chat_runs_lists_only_finished_results(tmp_path, tiny_dirs):
    import json

    make_run(tmp_path, tiny_dirs["llama"], "done")
    failed = make_run(tmp_path, tiny_dirs["llama"], "failed", seed=2)
    (failed / "state.json").write_text(json.dumps({"status": "failed", "message": "boom"}))
    shutil.rmtree(make_run(tmp_path, tiny_dirs["llama"], "empty", seed=3) / "adapter")
    assert chat_session.chat_runs(tmp_path) == [("done", str(tmp_path / "done"))]
