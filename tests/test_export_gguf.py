"""GGUF export: refusals in one line (fast), and on the embedded model (slow) the round trip through llama.cpp's
converter and quantiser, answered by llama.cpp and by transformers' GGUF reader as the merged model answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

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


_LLAMA = """
import json, sys
from llama_cpp import Llama
path, lora, question, n = json.loads(sys.argv[1])
llm = Llama(model_path=path, n_ctx=256, n_threads=2, seed=0, verbose=False, **({"lora_path": lora} if lora else {}))
# the chat template comes from the GGUF's metadata: llama-cpp-python formats the turns with it
out = llm.create_chat_completion(question, max_tokens=n, temperature=0.0, repeat_penalty=1.0)
print(json.dumps(out["choices"][0]["message"]["content"]))
"""


_AGREE = """
import json, sys
import numpy as np
from llama_cpp import Llama
path, prompt, answer = json.loads(sys.argv[1])
llm = Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True, verbose=False)
p = llm.tokenize(prompt.encode(), add_bos=False, special=True)
a = llm.tokenize(answer.encode(), add_bos=False, special=False)
llm.eval(p + a)
picks = np.asarray(llm.scores[len(p) - 1:len(p) + len(a) - 1]).argmax(-1)
print(json.dumps(float((picks == np.array(a)).mean())))
"""


def _llama_agreement(path, prompt: str, answer: str) -> float:
    """Teacher-forced: the share of the answer's tokens that are the file's top choice after the tokens before."""
    done = subprocess.run([sys.executable, "-c", _AGREE, json.dumps([str(path), prompt, answer])],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _llama_answer(path, lora=None) -> str:
    # its own process, as a runtime is: llama.cpp's OpenMP and torch's do not share one process safely
    args = json.dumps([str(path), str(lora) if lora else None, QUESTION, NEW_TOKENS])
    done = subprocess.run([sys.executable, "-c", _LLAMA, args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]).strip()


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

    started = time.perf_counter()
    done = gguf.export_gguf(embedded_run, tmp_path / "gguf", quants=["f16", "q8_0"])
    print(f"gguf export: {time.perf_counter() - started:.0f} s\n{done.summary()}")
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
    # 8-bit weights may flip a near tie and then wander off; token by token they pick what f16 picks
    prompt = tok.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    agree = _llama_agreement(q8, prompt, want)
    print(f"q8_0: {agree:.0%} of the merged model's answer tokens are its top choice too")
    assert agree >= 0.8  # SmolLM2 base, measured: 22 of 24 (f16: 24 of 24)
    reread = AutoModelForCausalLM.from_pretrained(tmp_path / "gguf", gguf_file=f16.name).eval()
    assert _hf_answer(reread, tok) == want  # transformers' own GGUF reader
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert f"FROM ./{q8.name}" in modelfile and "<|im_end|>" in modelfile
    assert "ollama create" in (tmp_path / "gguf" / "README.md").read_text()


@pytest.mark.slow
def test_gguf_lora_on_the_base_gguf_answers_like_the_merged_model(embedded_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.export import export_run

    started = time.perf_counter()
    done = gguf.export_gguf_lora(embedded_run, tmp_path / "lora")
    print(f"gguf-lora export: {time.perf_counter() - started:.0f} s\n{done.summary()}")
    base, lora = (tmp_path / "lora" / n for n in done.files)
    assert lora.name.endswith("-lora-f16.gguf") and done.files[lora.name] < 0.05 * done.files[base.name]
    merged = export_run(embedded_run, tmp_path / "merged", merge=True, dtype="fp32")
    tok = AutoTokenizer.from_pretrained(merged)
    want = _hf_answer(AutoModelForCausalLM.from_pretrained(merged).eval(), tok)
    assert _llama_answer(base, lora=lora) == want
    assert f"ADAPTER ./{lora.name}" in (tmp_path / "lora" / "Modelfile").read_text()
    assert llamacpp.ready()


def test_build_environment_drops_what_breaks_the_build(monkeypatch):
    # PEFT's BOFT leaves these behind in os.environ; a parent make leaves its own variables
    monkeypatch.setenv("CC", "gcc")
    monkeypatch.setenv("CXX", "gcc")
    monkeypatch.setenv("MAKEFLAGS", "-j8")
    monkeypatch.setenv("MAKELEVEL", "1")
    env = llamacpp._build_env()
    assert not {"CC", "CXX", "MAKEFLAGS", "MAKELEVEL"} & set(env)
    assert "-mno-amx-int8" in env["CMAKE_ARGS"] and env["PATH"] == os.environ["PATH"]
    monkeypatch.setenv("CXX", "clang++")  # a compiler the person chose is kept
    assert llamacpp._build_env()["CXX"] == "clang++"
