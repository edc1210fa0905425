"""The Ollama Modelfile: its TEMPLATE, read back from the written text and rendered as Ollama renders Go templates,
gives the same text as the tokenizer's own chat template; SYSTEM, stop tokens and PARAMETERs."""

from __future__ import annotations

import re

import pytest

from studio import gguf, modelfile, models
from tests.conftest import tiny_tokenizer

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>'"
          " + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if "
          "loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if "
          "add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
          "system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' "
          "+ message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>"
          "assistant\n' }}{% endif %}")
TWO_TURNS = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Quill, a model."},
             {"role": "user", "content": "What can you do?\nList two things."}]


def _tokenizer(template: str, bos: str = "<s>", eos: str = "<|end|>"):
    tok = tiny_tokenizer()
    tok.chat_template = template
    tok.bos_token, tok.eos_token = bos, eos
    return tok


def _embedded_template() -> str:
    # read from the embedded GGUF's own metadata: no conversion of the weights needed
    return gguf.chat_template_of(models.embedded_gguf())


def _parse(text: str) -> dict:
    """The Modelfile as Ollama reads it: TEMPLATE/SYSTEM in triple quotes, one PARAMETER per line."""
    out = {k: m.group(1) for k in ("TEMPLATE", "SYSTEM") if (m := re.search(k + r' """(.*?)"""', text, re.S))}
    out["stop"] = re.findall(r'^PARAMETER stop "(.*)"$', text, re.M)
    out["params"] = dict(re.findall(r"^PARAMETER (\w+) (\S+)$", text, re.M))
    out["FROM"] = re.search(r"^FROM (.*)$", text, re.M).group(1)
    return out


CASES = {  # name -> (template, bos, eos, runtime adds BOS)
    "embedded": (None, "<|im_start|>", "<|im_end|>", False),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", True),
    "chatml": (CHATML, "<|endoftext|>", "<|im_end|>", False),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("system", [None, "You are Quill, a terse assistant."])
def test_template_renders_like_the_chat_template(name, system):
    template, bos, eos, runtime_bos = CASES[name]
    tok = _tokenizer(template or _embedded_template(), bos, eos)
    mf = _parse(modelfile.modelfile_text("model-q8_0.gguf", tok, system, 2048))
    assert "TEMPLATE" in mf, "a known family gets a TEMPLATE line"
    # the runtime (llama.cpp in Ollama) adds BOS itself where the GGUF says so; Jinja writes it as text
    want = tok.apply_chat_template(TWO_TURNS, tokenize=False, add_generation_prompt=True)
    got = (bos if runtime_bos else "") + modelfile.render(mf["TEMPLATE"], TWO_TURNS, mf.get("SYSTEM"))
    if system:
        want = tok.apply_chat_template([{"role": "system", "content": system}, *TWO_TURNS], tokenize=False,
                                       add_generation_prompt=True)
        assert mf["SYSTEM"] == system
    assert got == want
    assert eos in mf["stop"] and mf["FROM"] == "./model-q8_0.gguf"
    assert mf["params"]["num_ctx"] == "2048" and float(mf["params"]["temperature"]) > 0


def test_the_embedded_default_system_prompt_becomes_system():
    tok = _tokenizer(_embedded_template(), "<|im_start|>", "<|im_end|>")
    mf = _parse(modelfile.modelfile_text("m.gguf", tok, None, 2048))
    assert mf["SYSTEM"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_unknown_template_leaves_template_to_the_gguf():
    tok = tiny_tokenizer()  # <|role|>text<|end|>: no family the exporter knows
    text = modelfile.modelfile_text("m.gguf", tok, "Be kind.", 512)
    mf = _parse(text)
    assert "TEMPLATE" not in mf and "stored in the GGUF" in text
    assert mf["SYSTEM"] == "Be kind." and mf["stop"] == ["<|end|>"]


def test_renderer_follows_go_template_rules():
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert modelfile.render("x  {{- range .Messages }} [{{ .Role }}:{{ .Content }}]  {{- end }}", msgs) == \
        "x [user:a] [assistant:b]"
    assert modelfile.render("{{ range .Messages }}{{ .Role }}\n{{- .Content }}{{ end }}", msgs) == "useraassistantb"
    assert modelfile.render("{{ range .Messages }}{{ .Content }} {{- end }}!", msgs, system="s") == "sab!"
    with pytest.raises(ValueError, match="subset"):
        modelfile.render("{{ if .System }}{{ .System }}{{ end }}", msgs)
