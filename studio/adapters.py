"""Bottleneck adapters, which PEFT does not ship: small down-project / nonlinearity / up-project modules.

Styles (where the adapters sit in each transformer block):
- ``houlsby`` (Houlsby et al. 2019): serial, after the attention output and after the MLP output
  (``placement`` keeps only one of the two: ``attention`` or ``mlp``).
- ``pfeiffer`` (Pfeiffer et al. 2021): serial, after the MLP output only.
- ``parallel`` (He et al. 2022): beside the MLP, reading the MLP's input, added to its output (scaled).

The up-projection starts at zero, so a freshly added adapter is the identity and the model's outputs
are unchanged until it trains. The base weights keep their names: adapters hang off each block as
``bottleneck_attention`` / ``bottleneck_mlp`` and join in through forward hooks.

    model = adapters.add(model, AdapterConfig(size=64, style="houlsby"))
    adapters.save(model, folder)                 # adapter_model.safetensors + bottleneck_config.json
    model = adapters.load(fresh_base, folder)    # identical logits
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from studio import targets as tg
from studio.config import ConfigError

__all__ = ["AdapterConfig", "Bottleneck", "STYLES", "PLACEMENTS", "ACTIVATIONS", "CONFIG_FILE", "WEIGHTS_FILE",
           "add", "save", "load", "disabled", "params_per_block", "placement_mismatch", "sites"]

CONFIG_FILE = "bottleneck_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# which block parts get an adapter, per style
STYLES: dict[str, tuple[str, ...]] = {"houlsby": ("attention", "mlp"), "pfeiffer": ("mlp",), "parallel": ("mlp",)}
# which of the serial Houlsby sites are kept
PLACEMENTS: dict[str, tuple[str, ...]] = {"both": ("attention", "mlp"), "attention": ("attention",), "mlp": ("mlp",)}
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
_STATE = "_studio_bottleneck"  # attribute on the model: (config, hook handles, enabled flag)


@dataclass(frozen=True)
class AdapterConfig:
    """How the adapters are shaped and placed."""

    size: int = 64  # bottleneck width
    style: str = "houlsby"
    activation: str = "relu"
    scaling: float = 1.0  # multiplies the adapter's output (He et al. use 4 for parallel adapters)
    dropout: float = 0.0
    placement: str = "both"  # houlsby only: after attention and MLP (both), or after one of them

    def __post_init__(self):
        if self.style not in STYLES:
            raise ConfigError(f"adapter style {self.style!r} is not one of {', '.join(STYLES)}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"adapter placement {self.placement!r} is not one of {', '.join(PLACEMENTS)}")
        mismatch = placement_mismatch(self.style, self.placement)
        if mismatch:
            raise ConfigError(f"adapter placement {mismatch}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"adapter activation {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if self.size < 1:
            raise ConfigError("adapter size must be at least 1")


class Bottleneck(nn.Module):
    """down (hidden -> size), activation, dropout, up (size -> hidden); up starts at zero (identity)."""

    def __init__(self, hidden: int, cfg: AdapterConfig):
        super().__init__()
        self.down = nn.Linear(hidden, cfg.size)
        self.act = ACTIVATIONS[cfg.activation]()
        self.drop = nn.Dropout(cfg.dropout)
        self.up = nn.Linear(cfg.size, hidden)
        self.scaling = cfg.scaling
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * self.up(self.drop(self.act(self.down(x))))


def placement_mismatch(style: str, placement: str) -> str | None:
    """Why ``placement`` cannot go with ``style`` (only houlsby has two sites to choose from), or None."""
    if placement != "both" and style != "houlsby":
        return (f"{placement} applies to the houlsby style only ({style} has one fixed place, by the MLP); "
                "leave it at both")
    return None


def sites(cfg: AdapterConfig) -> tuple[str, ...]:
    """The block parts that get an adapter: the style's, narrowed by ``placement`` for houlsby."""
    return tuple(p for p in STYLES[cfg.style] if p in PLACEMENTS[cfg.placement])


def params_per_block(hidden: int, cfg: AdapterConfig) -> int:
    """Parameters the adapters add to one block (weights and biases of down and up)."""
    one = hidden * cfg.size + cfg.size + cfg.size * hidden + hidden
    return one * len(sites(cfg))


def _site(block: nn.Module, part: str) -> nn.Module:
    for name, child in block.named_children():
        if tg.block_part(name, child) == part:
            return child
    raise ConfigError(f"bottleneck adapters: cannot find the {part} part of a {type(block).__name__} block")


def _with_first(output, fn):
    # attention modules return (hidden, weights, ...); MLPs return the tensor
    if isinstance(output, tuple):
        return (fn(output[0]),) + output[1:]
    return fn(output)


def _serial_hook(state: dict, adapter: Bottleneck):
    def hook(module, args, output):
        if not state["enabled"]:
            return output
        return _with_first(output, lambda h: h + adapter(h))
    return hook


def _parallel_hook(state: dict, adapter: Bottleneck):
    def hook(module, args, kwargs, output):
        if not state["enabled"]:
            return output
        x = args[0] if args else next(iter(kwargs.values()))
        return _with_first(output, lambda h: h + adapter(x))
    return hook


def add(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    """Freeze the model and add trainable adapters to every block (in place; returns the model)."""
    if hasattr(model, _STATE):
        raise ConfigError("this model already has bottleneck adapters")
    for p in model.parameters():
        p.requires_grad_(False)
    hidden = model.get_input_embeddings().embedding_dim
    state = {"config": cfg, "enabled": True, "handles": []}
    for block in tg.blocks(model):
        ref = next(block.parameters())
        for part in sites(cfg):
            adapter = Bottleneck(hidden, cfg).to(device=ref.device, dtype=ref.dtype)
            block.add_module(f"bottleneck_{part}", adapter)
            site = _site(block, part)
            if cfg.style == "parallel":
                handle = site.register_forward_hook(_parallel_hook(state, adapter), with_kwargs=True)
            else:
                handle = site.register_forward_hook(_serial_hook(state, adapter))
            state["handles"].append(handle)
    setattr(model, _STATE, state)
    return model


def _state(model: nn.Module) -> dict:
    state = getattr(model, _STATE, None)
    if state is None:
        raise ConfigError("this model has no bottleneck adapters")
    return state


def _adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if ".bottleneck_" in n}


def save(model: nn.Module, folder: str | Path) -> Path:
    """Write the adapters (safetensors) and their config (json) into ``folder``."""
    from safetensors.torch import save_file

    cfg = _state(model)["config"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_adapter_tensors(model), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps({"kind": "bottleneck", **asdict(cfg)}, indent=2), encoding="utf-8")
    return folder


def load(base: nn.Module, folder: str | Path) -> nn.Module:
    """Add adapters to a fresh base model and load their saved weights (strictly: every tensor must fit)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{folder}: no readable {CONFIG_FILE} ({err})") from None
    raw.pop("kind", None)
    model = add(base, AdapterConfig(**raw))
    saved = load_file(str(folder / WEIGHTS_FILE))
    params = dict(model.named_parameters())
    expected = {n for n in params if ".bottleneck_" in n}
    if set(saved) != expected:
        raise ConfigError(f"{folder}: the saved adapters do not fit this base model")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor.to(params[name].dtype))
    return model.eval()


@contextlib.contextmanager
def disabled(model: nn.Module):
    """Run the model without its adapters inside the block (the base answer, from the same weights)."""
    state = _state(model)
    before, state["enabled"] = state["enabled"], False
    try:
        yield model
    finally:
        state["enabled"] = before
