"""Bottleneck adapters: identity at init, placement per style, training, save/load round trip, switching off."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model

from studio import adapters
from studio import targets as tg
from studio.adapters import AdapterConfig
from studio.config import ConfigError

STYLES = tuple(adapters.STYLES)


@torch.no_grad()
def _logits(model, seed: int = 1) -> torch.Tensor:
    ids = torch.randint(8, 100, (2, 12), generator=torch.Generator().manual_seed(seed))
    return model.eval()(input_ids=ids).logits


def _nudge(model) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".bottleneck_" in n:
                p.add_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("family", ("llama", "gpt2"))
@pytest.mark.parametrize("style", STYLES)
def test_a_new_adapter_is_the_identity(style, family):
    expected = _logits(tiny_model(family))
    model = adapters.add(tiny_model(family), AdapterConfig(size=8, style=style, activation="gelu"))
    torch.testing.assert_close(_logits(model), expected, rtol=0, atol=0)


@pytest.mark.parametrize("style,per_block", [("houlsby", 2), ("pfeiffer", 1), ("parallel", 1)])
def test_placement_and_only_adapters_train(style, per_block):
    model = adapters.add(tiny_model("llama"), AdapterConfig(size=8, style=style))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".bottleneck_" in n for n in trainable)
    assert len(trainable) == 2 * 4 * per_block  # 2 blocks x (down, up) x (weight, bias) per adapter
    blocks = model.model.layers
    assert hasattr(blocks[0], "bottleneck_mlp") and hasattr(blocks[0], "bottleneck_attention") == (per_block == 2)
    cfg = AdapterConfig(size=8, style=style)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * adapters.params_per_block(64, cfg)


def _round_trip(model, family: str, tmp_path) -> dict:
    """Nudge the adapters off identity, save, load onto a fresh base: identical logits. Returns the saved config."""
    _nudge(model)
    expected = _logits(model)
    adapters.save(model, tmp_path)
    loaded = adapters.load(tiny_model(family), tmp_path)
    torch.testing.assert_close(_logits(loaded), expected, rtol=0, atol=0)
    assert not torch.allclose(expected, _logits(tiny_model(family)))
    return json.loads((tmp_path / adapters.CONFIG_FILE).read_text())


@pytest.mark.parametrize("family", ("llama", "gpt2"))
@pytest.mark.parametrize("placement,parts", [("both", {"attention", "mlp"}), ("attention", {"attention"}),
                                             ("mlp", {"mlp"})])
def test_houlsby_placement_keeps_the_chosen_sites(placement, parts, family, tmp_path):
    cfg = AdapterConfig(size=8, placement=placement)
    model = adapters.add(tiny_model(family), cfg)
    block = tg.blocks(model)[0]
    assert {p for p in ("attention", "mlp") if hasattr(block, f"bottleneck_{p}")} == parts
    assert adapters.sites(cfg) == tuple(p for p in ("attention", "mlp") if p in parts)
    hidden = model.get_input_embeddings().embedding_dim
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * adapters.params_per_block(hidden, cfg)
    assert _round_trip(model, family, tmp_path)["placement"] == placement


def test_placement_is_for_houlsby_only():
    with pytest.raises(ConfigError, match="placement"):
        AdapterConfig(placement="sideways")
    with pytest.raises(ConfigError, match="houlsby style only"):
        AdapterConfig(style="pfeiffer", placement="attention")


@pytest.mark.parametrize("family", ("llama", "gpt2"))
@pytest.mark.parametrize("style", STYLES)
def test_save_load_gives_identical_logits(style, family, tmp_path):
    model = adapters.add(tiny_model(family), AdapterConfig(size=8, style=style, scaling=2.0))
    assert _round_trip(model, family, tmp_path)["style"] == style


def test_parallel_reads_the_mlp_input_serial_the_output():
    # a parallel adapter must change the output even where the MLP output is zero; a serial one cannot
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Linear(4, 4)
            nn.init.zeros_(self.mlp.weight)
            nn.init.zeros_(self.mlp.bias)

        def forward(self, x):
            return self.mlp(x)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.layers = nn.ModuleList([Block()])

        def get_input_embeddings(self):
            return self.embed

    x = torch.ones(1, 4)
    for style, changes in (("parallel", True), ("pfeiffer", False)):
        m = adapters.add(Tiny(), AdapterConfig(size=2, style=style, activation="tanh"))
        nn.init.zeros_(m.layers[0].bottleneck_mlp.down.bias)
        nn.init.ones_(m.layers[0].bottleneck_mlp.up.weight)
        assert bool(m.layers[0](x).abs().sum() > 0) == changes


def test_disabled_runs_the_base_and_restores():
    base = _logits(tiny_model("gpt2"))
    model = adapters.add(tiny_model("gpt2"), AdapterConfig(size=8))
    _nudge(model)
    tuned = _logits(model)
    with adapters.disabled(model):
        torch.testing.assert_close(_logits(model), base)
    torch.testing.assert_close(_logits(model), tuned)


def test_training_moves_the_loss_down():
    torch.manual_seed(0)
    model = adapters.add(tiny_model("llama"), AdapterConfig(size=16))
    ids = torch.randint(8, 100, (2, 16))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(5):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bad_configs_and_mismatched_loads_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="style"):
        AdapterConfig(style="sideways")
    with pytest.raises(ConfigError, match="activation"):
        AdapterConfig(activation="swish2")
    model = adapters.add(tiny_model("llama"), AdapterConfig(size=8))
    with pytest.raises(ConfigError, match="already"):
        adapters.add(model, AdapterConfig(size=8))
    adapters.save(model, tmp_path)
    with pytest.raises(ConfigError, match="do not fit"):
        adapters.load(tiny_model("gpt2"), tmp_path)  # gpt2 parameter names differ from llama's
    with pytest.raises(ConfigError, match="no readable"):
        adapters.load(tiny_model("llama"), tmp_path / "missing")
