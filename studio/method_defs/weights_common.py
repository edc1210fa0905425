"""Storage shared by the methods that change the base weights (full, freeze, BitFit): a full HF model folder."""

from __future__ import annotations

import json
from pathlib import Path

from studio.config import ConfigError
from studio.method_api import MethodSpec

__all__ = ["WEIGHTS_STORAGE", "freeze_all"]


def freeze_all(model) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def _save(model, spec: MethodSpec, folder: Path) -> None:
    # a complete model folder (safetensors) that transformers, the chat tab and export read directly
    model.save_pretrained(str(folder), safe_serialization=True)


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if not single.is_file():
        raise ConfigError(f"{folder}: no model.safetensors in this result folder")
    return [single]


def _load(base, folder: Path, spec: MethodSpec):
    from safetensors.torch import load_file

    state: dict = {}
    for path in _weight_files(folder):
        state.update(load_file(str(path)))
    result = base.load_state_dict(state, strict=False)
    # tied weights (lm_head = embeddings) are saved once; anything else missing means a different model
    tied = {k for k in result.missing_keys if k.endswith("lm_head.weight")}
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        odd = (missing + list(result.unexpected_keys))[:3]
        raise ConfigError(f"{folder}: these weights do not fit the base model ({', '.join(odd)}...)")
    return base.eval()


WEIGHTS_STORAGE = dict(save=_save, load=_load, fmt="weights", family="weights", can_merge=False)
