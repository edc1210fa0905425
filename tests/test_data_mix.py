"""Mixtures and replay: token shares match the weights over a fixed seed, task tags reach the rendered rows,
replay rows come from the replay source at the stated share, and bad shares are one line each; the language
filter keeps the asked language and an empty result is one line."""

from __future__ import annotations

import json

import pytest

from studio import data
from studio.config import RunConfig
from studio.data import mixture, quality
from tests.conftest import tiny_tokenizer

REPLAY = "presets/data/assistant_chat.jsonl"


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def _sources(tmp_path, n=30):
    main = _write(tmp_path / "main.jsonl", [{"prompt": f"who are you {i}?", "completion": "I am Quill." * (1 + i % 3)}
                                            for i in range(n)])
    short = _write(tmp_path / "short.jsonl", [{"prompt": f"add {i} and 1", "completion": str(i + 1)}
                                              for i in range(7)])
    long = _write(tmp_path / "long.jsonl", [{"prompt": f"tell a story {i}", "completion": "once upon a time " * 9}
                                            for i in range(5)])
    return main, short, long


def _cfg(path, **data):
    cfg = RunConfig()
    cfg.data.path, cfg.data.packing, cfg.train.max_seq_len = path, False, 1024
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def _text(tok, example) -> str:
    return tok.decode(example["input_ids"])


def test_token_shares_match_the_weights(tmp_path):
    main, short, long = _sources(tmp_path)
    cfg = _cfg(main, task="identity", mix=[{"path": short, "weight": 0.3, "task": "sums"},
                                           {"path": long, "weight": 0.2, "task": "stories"}])
    tok = tiny_tokenizer()
    prepared = data.build(cfg, tok)
    tokens = {"identity": 0, "sums": 0, "stories": 0}
    for e in prepared.train:
        tags = [t for t in tokens if f"[{t}] " in _text(tok, e)]
        assert len(tags) == 1  # every row carries exactly its source's tag
        tokens[tags[0]] += len(e["input_ids"])
    total = sum(tokens.values())
    shares = {t: n / total for t, n in tokens.items()}
    assert shares == pytest.approx({"identity": 0.5, "sums": 0.3, "stories": 0.2}, abs=0.02)
    report = prepared.stats.mixture
    assert [r["label"] for r in report] == ["identity", "sums", "stories"] and report[0]["rows"] == 30
    assert [r["share"] for r in report] == pytest.approx([shares["identity"], shares["sums"], shares["stories"]])
    assert report[1]["distinct"] == 7 < report[1]["rows"]  # the small source is repeated to reach its share
    again = data.build(cfg, tok)  # a fixed seed gives the same mixture
    assert [e["input_ids"] for e in again.train] == [e["input_ids"] for e in prepared.train]


def test_task_tags_are_in_the_rendered_rows(tmp_path):
    main, short, _ = _sources(tmp_path)
    cfg = _cfg(main, task="identity", mix=[{"path": short, "weight": 0.4, "task": "sums"}])
    view = data.preview(cfg, tiny_tokenizer(), n=12)
    texts = ["".join(text for text, _ in runs) for runs in view.examples]
    assert any("<|user|>[identity] who are you" in t for t in texts)
    assert any("<|user|>[sums] add " in t for t in texts)
    assert len(view.mixture) == 2 and view.mixture[1].startswith("sums: ") and "(asked 40%)" in view.mixture[1]
    tagged = mixture.tag([{"text": "plain"}, {"messages": [{"role": "system", "content": "s"},
                                                           {"role": "user", "content": "q"}]}], "t")
    assert tagged[0]["text"] == "[t] plain" and tagged[1]["messages"][1]["content"] == "[t] q"


def test_replay_rows_come_from_the_replay_source_at_the_stated_share(tmp_path):
    main, _, _ = _sources(tmp_path, n=400)  # replay rows are long: a big main source makes a row a small share
    prompts = {json.loads(line)["messages"][0]["content"] for line in open(REPLAY, encoding="utf-8")}
    cfg = _cfg(main, replay_share=0.25)
    tok = tiny_tokenizer()
    prepared = data.build(cfg, tok)
    replayed = main_tokens = 0
    for e in prepared.train:
        text = _text(tok, e)
        if any(p in text for p in prompts):
            replayed += len(e["input_ids"])
        else:
            assert "who are you" in text  # a row not from the replay source is from data.path
            main_tokens += len(e["input_ids"])
    assert replayed / (replayed + main_tokens) == pytest.approx(0.25, abs=0.03)
    assert prepared.stats.mixture[1]["label"] == "replay"


@pytest.mark.parametrize("mix, replay, needle", [
    ([{"path": "a.jsonl", "weight": 0.6}, {"path": "b.jsonl", "weight": 0.5}], 0.0, "sum to 1.1 (0.6 + 0.5)"),
    ([{"path": "a.jsonl", "weight": 0.7}], 0.3, "sum to 1 (0.7 + 0.3)"),
    ([{"path": "a.jsonl", "weight": 0}], 0.0, "mix[1].weight: expected a share"),
    ([{"path": "a.jsonl", "weight": -0.2}], 0.0, "mix[1].weight: expected a share"),
    ([{"path": "a.jsonl", "weight": 0.2, "share": 1}], 0.0, "mix[1].share: unknown key"),
    ([{"weight": 0.2}], 0.0, "mix[1].path: expected"),
])
def test_bad_shares_are_one_line(mix, replay, needle):
    cfg = RunConfig()
    cfg.data.mix, cfg.data.replay_share = mix, replay
    found = cfg.problems()
    assert len(found) == 1 and needle in found[0], found


def test_a_missing_mixed_in_source_is_one_line(tmp_path):
    main, _, _ = _sources(tmp_path)
    with pytest.raises(data.DataError) as err:
        data.build(_cfg(main, mix=[{"path": str(tmp_path / "nope.jsonl"), "weight": 0.2}]), tiny_tokenizer())
    assert len(err.value.problems) == 1 and "nope.jsonl: no such file" in err.value.problems[0]


EN = "The weather today is sunny and warm, so we will walk to the park after lunch."
FR = "Le temps est ensoleillé et chaud aujourd'hui, nous irons au parc après le déjeuner."
DE = "Das Wetter ist heute sonnig und warm, also gehen wir nach dem Mittagessen in den Park."


def test_language_filter_keeps_the_asked_language():
    rows = [{"text": t} for t in (EN, FR, DE, EN.upper())]
    kept, dropped = quality.language_filter(rows, "en")
    assert [r["text"] for r in kept] == [EN, EN.upper()] and dropped.dropped == 2
    assert "row 2 reads as fr" in dropped.examples[0] and "row 3 reads as de" in dropped.examples[1]
    kept, _ = quality.language_filter(rows, "fr")
    assert [r["text"] for r in kept] == [FR]


def test_language_filter_bad_code_and_empty_result_are_one_line(tmp_path):
    path = _write(tmp_path / "fr.jsonl", [{"prompt": "q", "completion": t} for t in (FR, FR + " Oui.")])
    with pytest.raises(data.DataError) as err:
        data.build(_cfg(path, language="en"), tiny_tokenizer())
    assert len(err.value.problems) == 1 and "left no rows of 2 (language dropped 2)" in err.value.problems[0]
    with pytest.raises(data.DataError) as err:
        data.build(_cfg(path, language="xx"), tiny_tokenizer())
    assert len(err.value.problems) == 1 and "data.language: 'xx' is not a language code" in err.value.problems[0]


def test_the_browser_may_not_replay_or_mix_from_outside_the_allowed_folders(tmp_path, monkeypatch):
    from studio.ui import paths

    monkeypatch.delenv(paths.ENV, raising=False)
    cfg = RunConfig()
    cfg.data.replay_share, cfg.data.replay_path = 0.2, str(tmp_path / "secret.jsonl")
    cfg.data.mix = [{"path": str(tmp_path / "other.jsonl"), "weight": 0.1}]
    with pytest.raises(paths.PathRefused) as err:
        paths.check_config(cfg)
    assert [p.split(":")[0] for p in err.value.problems] == ["data.replay_path", "data.mix[1].path"]
    cfg.data.replay_share, cfg.data.mix = 0.0, []  # replay off: its path is not read, so not refused
    assert paths.check_config(cfg) is cfg
