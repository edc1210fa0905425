"""Shared fixtures: tiny random models built in-process from configs (no download), and a tmp runs folder."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(family: str):
    """A config for a tiny model of the given family (llama, gpt2, qwen2): 2 blocks, hidden 64.

    Llama and Qwen2 state a 1024-token context, above the default train.max_seq_len (512), which the studio
    refuses beyond a model's context. GPT-2 keeps 256 learned positions (more would change every weight drawn
    from the seed after them), so a GPT-2 run sets train.max_seq_len to 256 or less."""
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=512, tie_word_embeddings=family != "llama")
    if family == "llama":
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=1024, **common)
    if family == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2, **common)
    if family == "qwen2":
        return Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=1024, **common)
    raise ValueError(family)


def tiny_model(family: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(family)).eval()


_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer():
    """A small word-level tokenizer (built in-process) with a chat template and pad/eos tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    words = [chr(c) for c in range(32, 127)]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tk = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=1000))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="<|end|>",
                                  unk_token="<unk>", additional_special_tokens=specials[4:])
    tok.chat_template = _CHAT_TEMPLATE
    return tok


def save_tiny(family: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny model and tokenizer as a Hugging Face folder (safetensors) and return it."""
    model = tiny_model(family, seed)
    model.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny llama / gpt2 / qwen2 model folders, made once per test session."""
    base = tmp_path_factory.mktemp("tiny-models")
    return {f: save_tiny(f, base / f) for f in ("llama", "gpt2", "qwen2")}


def write_chat_rows(path: Path, count: int) -> Path:
    """``count`` short chat rows of varied length, as .jsonl at ``path`` (the training tests' data)."""
    rows = [{"messages": [{"role": "user", "content": f"question {i}?" + " more" * (i % 5)},
                          {"role": "assistant", "content": f"answer number {i}." + " yes" * (i % 7)}]}
            for i in range(count)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.fixture
def chat_file(tmp_path):
    """24 short chat rows of varied length in tmp (the training tests' data)."""
    return write_chat_rows(tmp_path / "chat.jsonl", 24)


@pytest.fixture
def identity_rows() -> list[dict]:
    path = ROOT / "presets" / "data" / "identity.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, tmp_path_factory):
    # The converted embedded model is shared across tests (it is read-only); everything else is per test.
    shared = Path(os.environ.get("STUDIO_CACHE", Path.home() / ".cache" / "peft-studio"))
    monkeypatch.setenv("STUDIO_CACHE", str(shared))
    # the UI reads typed paths only under allowed folders; the tests' models and data live in pytest's tmp
    monkeypatch.setenv("STUDIO_ALLOWED_DIRS", str(tmp_path_factory.getbasetemp()))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def studio_url(tiny_dirs, tmp_path, monkeypatch):
    """The studio served on a free loopback port with the tiny Llama, its runs in tmp; yields the page URL."""
    import httpx
    from gradio import networking

    from studio.ui import launch

    # Gradio's launch gives up when the first HEAD of the page takes over 3 s; on two busy shared cores building
    # the page can take that long, so the check waits up to 60 s
    def url_ok(url: str) -> bool:
        try:
            return httpx.head(url, timeout=60, verify=False).status_code in (200, 401, 301, 302, 303, 307, 308)
        except (ConnectionError, httpx.HTTPError):
            return False

    monkeypatch.setattr(networking, "url_ok", url_ok)

    port = free_port()
    demo = launch.main(["--port", str(port), "--model", str(tiny_dirs["llama"]), "--runs", str(tmp_path / "runs")],
                       prevent_thread_lock=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture
def page():
    """A headless Chromium page (Debian's, through Playwright); browser tests only."""
    from tests.browser import ARGS, ARTIFACTS, CHROMIUM

    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (make browser)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(60_000)
        try:
            yield pg
        finally:
            browser.close()
