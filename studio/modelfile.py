"""An Ollama Modelfile for an exported GGUF: FROM, TEMPLATE, SYSTEM, stop tokens and PARAMETERs.

Ollama formats turns with a Go template. The studio knows a few template families as data (ChatML, Llama 3) and
picks the one whose rendering equals the tokenizer's own chat template on a probe conversation, so the TEMPLATE
line is only written when it formats turns exactly as training did. For a template of no known family the
Modelfile leaves TEMPLATE out and Ollama falls back to the chat template stored in the GGUF itself.

``render`` is a small renderer of the Go-template subset these families use ({{ range .Messages }}, {{ .Role }},
{{ .Content }}, {{ end }}, and the {{- -}} whitespace trims), with Ollama's rule that the Modelfile's SYSTEM
becomes the first message when the conversation brings none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Family", "FAMILIES", "render", "find_family", "default_system", "modelfile_text"]


@dataclass(frozen=True)
class Family:
    """A chat-template family as Ollama writes it."""

    name: str
    template: str
    """the Go template (Ollama's TEMPLATE)"""
    stops: tuple[str, ...]
    """tokens that end an assistant turn"""
    runtime_bos: bool = False
    """the runtime adds the BOS token itself, so the Go template leaves out what the Jinja one writes first"""


FAMILIES = (
    Family("chatml", "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                     "<|im_start|>assistant\n", ("<|im_start|>", "<|im_end|>")),
    Family("llama3", "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}"
                     "<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
           ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), runtime_bos=True),
)

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_PROBE = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
          {"role": "user", "content": "Tell me a joke."}]


def _parse(template: str) -> list[tuple[str, str]]:
    """(kind, value) pieces: ('text', ...) or ('action', ...), with the {{- -}} trims applied to the text."""
    pieces: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        pieces.append(("text", text))
        pieces.append(("action", m.group(2)))
        pos, trim_next = m.end(), bool(m.group(3))
    tail = template[pos:]
    pieces.append(("text", tail.lstrip() if trim_next else tail))
    return pieces


def render(template: str, messages: list[dict], system: str | None = None) -> str:
    """Render an Ollama Go template for ``messages`` as Ollama does (the subset FAMILIES use).

    Args:
        template: the Go template.
        messages: [{"role", "content"}...], the conversation so far.
        system: the Modelfile's SYSTEM; Ollama puts it first when the conversation has no system message.

    Raises:
        ValueError: the template uses an action outside the subset.
    """
    if system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}, *messages]
    out: list[str] = []
    pieces = _parse(template)
    i = 0
    while i < len(pieces):
        kind, value = pieces[i]
        if kind == "text":
            out.append(value)
        elif value == "range .Messages":
            end = next(j for j in range(i, len(pieces)) if pieces[j] == ("action", "end"))
            body = pieces[i + 1:end]
            for msg in messages:
                out += [v if k == "text" else _field(v, msg) for k, v in body]
            i = end
        else:
            raise ValueError(f"Go template action outside the supported subset: {{{{ {value} }}}}")
        i += 1
    return "".join(out)


def _field(action: str, msg: dict) -> str:
    fields = {".Role": "role", ".Content": "content"}
    if action not in fields:
        raise ValueError(f"Go template action outside the supported subset: {{{{ {action} }}}}")
    return msg[fields[action]]


def _hf(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _go(family: Family, tokenizer, messages: list[dict], system: str | None = None) -> str:
    bos = (tokenizer.bos_token or "") if family.runtime_bos else ""
    return bos + render(family.template, messages, system)


def find_family(tokenizer) -> Family | None:
    """The known family whose rendering equals the tokenizer's chat template (with and without a system
    message, the latter through ``default_system``), or None."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    with_system = [{"role": "system", "content": "Be brief."}, *_PROBE]
    for family in FAMILIES:
        try:
            if _go(family, tokenizer, with_system) != _hf(tokenizer, with_system):
                continue
            if _go(family, tokenizer, _PROBE, default_system(tokenizer, family)) == _hf(tokenizer, _PROBE):
                return family
        except Exception:  # a template that needs other variables (tools, dates...) is not of this family
            continue
    return None


def default_system(tokenizer, family: Family) -> str | None:
    """The system message the tokenizer's template adds by itself when a conversation has none, or None."""
    marker = "\x00SYSTEM\x00"
    head, _, tail = _go(family, tokenizer, _PROBE[:1], marker).partition(marker)
    text = _hf(tokenizer, _PROBE[:1])
    if not text.startswith(head):
        return None
    end = text.find(tail, len(head)) if tail else -1
    found = text[len(head):end] if end > len(head) else None
    return found if found and _go(family, tokenizer, _PROBE[:1], found) == text else None


def _quote(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile_text(gguf_name: str, tokenizer, system: str | None, context: int,
                   temperature: float = 0.7, top_p: float = 0.9) -> str:
    """The Modelfile for ``gguf_name`` (a file beside it).

    Args:
        gguf_name: the GGUF file's name (FROM ./name).
        tokenizer: the exported tokenizer (its chat template, BOS and EOS tokens).
        system: the run's system prompt; None uses the template's own default system message, if it has one.
        context: num_ctx, the context length to serve with.
        temperature, top_p: sampling defaults.
    """
    family = find_family(tokenizer)
    lines = [f"FROM ./{gguf_name}", ""]
    if family is not None:
        lines += [f"TEMPLATE {_quote(family.template)}", ""]
        system = system or default_system(tokenizer, family)
    else:
        lines += ["# The chat template is of no family this exporter knows: Ollama uses the one stored in the GGUF.",
                  ""]
    if system:
        lines += [f"SYSTEM {_quote(system)}", ""]
    stops = list(family.stops if family else ())
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(eos)
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += [f"PARAMETER temperature {temperature:g}", f"PARAMETER top_p {top_p:g}", f"PARAMETER num_ctx {context}"]
    return "\n".join(lines) + "\n"
