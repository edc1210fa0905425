"""A model's modules on the meta device: names and shapes with no memory and no weights.

Preflight checks a run's targets and ranks against this copy, the target discovery reads layer names and
sizes from it, and prompt-learning methods get a trial forward pass on it.

    model = meta_model.cached(config)        # built once per config object, or None if it cannot be built
    model = meta_model.for_arch(arch)        # the same from an ArchSpec (a config of its model type)
"""

from __future__ import annotations

import functools
import threading
import warnings

import torch

from studio.models import ArchSpec

__all__ = ["build", "cached", "config_for", "for_arch"]

_lock = threading.Lock()
_meta_cache: dict[int, tuple] = {}
_CACHED_MODELS = 4


def build(config, trust_remote_code: bool = False):
    """A fresh meta-device copy of the model ``config`` describes (raises what transformers raises)."""
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def cached(config, trust_remote_code: bool = False):
    """The model's modules on the meta device (shapes only), cached per config; None if it cannot be built."""
    with _lock:
        hit = _meta_cache.get(id(config))
        if hit is not None and hit[0] is config:
            return hit[1]
        try:
            model = build(config, trust_remote_code)
        except Exception:  # noqa: BLE001 - some code needs real weights to build; loading will tell
            model = None
        if len(_meta_cache) >= _CACHED_MODELS:
            _meta_cache.pop(next(iter(_meta_cache)))
        _meta_cache[id(config)] = (config, model)  # the config is kept so its id is never reused
        return model


# ArchSpec field -> the config names ArchSpec.from_config reads it from, the usual one first
_CONFIG_NAMES = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"), "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_heads": ("num_attention_heads", "n_head"), "num_kv_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",), "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "vocab_size": ("vocab_size",), "max_position": ("max_position_embeddings", "n_positions", "n_ctx"),
    "tied_embeddings": ("tie_word_embeddings",), "attention_bias": ("attention_bias",), "mlp_bias": ("mlp_bias",),
}


@functools.lru_cache(maxsize=64)
def config_for(arch):
    """A transformers config of ``arch``'s model type carrying its facts, or None when none reproduces them.

    Kept per architecture, so ``cached`` (which keeps models per config object) builds each model once.
    """
    from transformers import AutoConfig

    try:
        plain = AutoConfig.for_model(arch.model_type)
        kwargs = {}
        for fact, names in _CONFIG_NAMES.items():
            # the name this config class really stores (GPT-2: hidden_size is an alias of n_embd)
            real = [plain.attribute_map.get(n, n) for n in names]
            stored = next((n for n in real if n in vars(plain)), None)
            if stored is not None:
                kwargs[stored] = getattr(arch, fact)
        for token in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if isinstance(getattr(plain, token, None), int) and getattr(plain, token) >= arch.vocab_size:
                kwargs[token] = None  # a default token id beyond a small vocabulary cannot build
        config = AutoConfig.for_model(arch.model_type, **kwargs)
    except Exception:  # noqa: BLE001 - an unknown or remote-code model type: no config to build from
        return None
    return config if ArchSpec.from_config(config) == arch else None


def for_arch(arch):
    """A copy of ``arch``'s model on the meta device (module names and shapes, no memory), or None."""
    config = config_for(arch)
    return cached(config, False) if config is not None else None
