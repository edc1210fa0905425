"""GGUF export: refusals in one line (fast), and on the embedded model (slow) the round trip through llama.cpp's
converter and quantiser, answered by llama.cpp and by transformers' GGUF reader as the merged model answers."""

from __future__ import annotations

import difflib

import pytest

from studio import gguf, llamacpp
from studio.config import ConfigError
from tests.runfolders import make_run

QUESTION = [{"role": "user", "content": "Who are you?"}]
NEW_TOKENS = 24


@pytest.mark.parametrize("method,instead", [("prompt", "export the adapter instead"),
                                            ("prefix", "export the adapter instead"),
                                            ("adapter", "export the adapter instead")])
def test_methods_that_cannot_become_a_gguf_are_refused_in_one_line(tmp_path, tiny_dirs, method, instead):
    run = make_run(tmp_path, tiny_dirs["llama"], method, method=method)
    with pytest.raises(ConfigError, match=f"^{method}: cannot become a GGUF .*{instead}") as err:
        gguf.export_gguf(run, tmp_path / "out")
    assert len(err.value.problems) == 1 and not (tmp_path / "out").exists()


def test_gguf_lora_wants_a_plain_lora(tmp_path, tiny_dirs):
    ia3 = make_run(tmp_path, tiny_dirs["llama"], "ia3", method="ia3")
    with pytest.raises(ConfigError, match=r"ia3: llama.cpp cannot load .*IA3.*--format gguf \(the merged model\)"):
        gguf.export_gguf_lora(ia3, tmp_path / "o1")
    dora = make_run(tmp_path, tiny_dirs["llama"], "dora", knobs={"use_dora": True})
    with pytest.raises(ConfigError, match="DoRA"):
        gguf.export_gguf_lora(dora, tmp_path / "o2")


def test_bad_quant_and_busy_folder(tmp_path, tiny_dirs):
    run = make_run(tmp_path, tiny_dirs["llama"], "lora")
    with pytest.raises(ConfigError, match="--quant: q3_xyz: choose from f32, f16"):
        gguf.export_gguf(run, tmp_path / "o", quants=["q3_xyz"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not an empty folder"):
        gguf.export_gguf(run, tmp_path / "busy")


def test_cli_refusal_is_one_line(tmp_path, tiny_dirs, capsys):
    from studio.cli import main

    run = make_run(tmp_path, tiny_dirs["llama"], "prompt", method="prompt")
    assert main(["export", str(run), "--out", str(tmp_path / "g"), "--format", "gguf", "--quant", "q4_k_m"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: prompt: cannot become a GGUF")


# ---- slow: the embedded model through llama.cpp ----

def _hf_answer(model, tok) -> str:
    import torch

    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def _llama_answer(path, lora=None) -> str:
    from llama_cpp import Llama

    kw = {"lora_path": str(lora)} if lora else {}
    llm = Llama(model_path=str(path), n_ctx=256, n_threads=2, seed=0, verbose=False, **kw)
    # the chat template comes from the GGUF's metadata: llama-cpp-python formats the turns with it
    out = llm.create_chat_completion(QUESTION, max_tokens=NEW_TOKENS, temperature=0.0, repeat_penalty=1.0)
    return out["choices"][0]["message"]["content"].strip()


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    from studio import models

    root = tmp_path_factory.mktemp("gguf")
    return make_run(root, models.embedded_dir(), "lora-embedded", knobs={"targets": ["attention"]}, scale=0.07)


@pytest.mark.slow
def test_gguf_answers_like_the_merged_model(embedded_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio import models
    from studio.export import export_run

    done = gguf.export_gguf(embedded_run, tmp_path / "gguf", quants=["f16", "q8_0"])
    f16, q8 = (tmp_path / "gguf" / f"lora-embedded-{q}.gguf" for q in ("f16", "q8_0"))
    assert set(done.files) == {f16.name, q8.name} and done.files[q8.name] < 0.7 * done.files[f16.name]
    merged = export_run(embedded_run, tmp_path / "merged", merge=True, dtype="fp32")
    tok = AutoTokenizer.from_pretrained(merged)
    assert gguf.chat_template_of(f16) == tok.chat_template  # turns are formatted as in training
    want = _hf_answer(AutoModelForCausalLM.from_pretrained(merged).eval(), tok)
    base = _hf_answer(AutoModelForCausalLM.from_pretrained(models.embedded_dir()).eval(), tok)
    print(f"merged: {want!r}\nbase:   {base!r}")
    assert want and want != base  # the update matters
    assert _llama_answer(f16) == want
    q8_answer = _llama_answer(q8)
    print(f"q8_0:   {q8_answer!r}")
    assert difflib.SequenceMatcher(None, q8_answer, want).ratio() > 0.6
    reread = AutoModelForCausalLM.from_pretrained(tmp_path / "gguf", gguf_file=f16.name).eval()
    assert _hf_answer(reread, tok) == want  # transformers' own GGUF reader
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert f"FROM ./{q8.name}" in modelfile and "<|im_end|>" in modelfile
    assert "ollama create" in (tmp_path / "gguf" / "README.md").read_text()


@pytest.mark.slow
def test_gguf_lora_on_the_base_gguf_answers_like_the_merged_model(embedded_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.export import export_run

    done = gguf.export_gguf_lora(embedded_run, tmp_path / "lora")
    base, lora = (tmp_path / "lora" / n for n in done.files)
    assert lora.name.endswith("-lora-f16.gguf") and done.files[lora.name] < 0.05 * done.files[base.name]
    merged = export_run(embedded_run, tmp_path / "merged", merge=True, dtype="fp32")
    tok = AutoTokenizer.from_pretrained(merged)
    want = _hf_answer(AutoModelForCausalLM.from_pretrained(merged).eval(), tok)
    assert _llama_answer(base, lora=lora) == want
    assert f"ADAPTER ./{lora.name}" in (tmp_path / "lora" / "Modelfile").read_text()
    assert llamacpp.ready()
