"""What every PEFT-backed method shares: preparing the base, saving, loading, merging, switching off."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from studio.method_api import Context, MethodSpec

__all__ = ["prepare", "wrap", "PEFT_STORAGE", "MERGEABLE"]


def prepare(model, ctx: Context, checkpointing: bool = False, kbit: bool = False):
    """Make the base ready for a PEFT tuner: k-bit preparation and/or gradient checkpointing."""
    checkpointing = checkpointing or ctx.gradient_checkpointing
    if kbit:
        from peft import prepare_model_for_kbit_training

        # casts norms to fp32, freezes the base and, with checkpointing, makes inputs require grad
        return prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # the embeddings are frozen: without this no gradient reaches the checkpointed blocks
        model.enable_input_require_grads()
    return model


def wrap(model, config):
    """``get_peft_model`` with the config; the returned PeftModel is what trains."""
    from peft import get_peft_model

    return get_peft_model(model, config)


def _save(model, spec: MethodSpec, folder: Path) -> None:
    # plain PEFT format: adapter_config.json + adapter_model.safetensors, loadable by PeftModel.from_pretrained
    model.save_pretrained(str(folder), safe_serialization=True)


def _load(base, folder: Path, spec: MethodSpec):
    from peft import PeftModel

    with warnings.catch_warnings():
        # AdaLoRA's saved rank pattern names its E vectors; PEFT matches it to modules, finds no such
        # module names and warns, yet loads the resized tensors correctly (the round-trip test checks it)
        warnings.filterwarnings("ignore", message="The following rank_pattern keys")
        model = PeftModel.from_pretrained(base, str(folder))
    return model.eval()


def _merge(model):
    return model.merge_and_unload()


@contextlib.contextmanager
def _off(model):
    with model.disable_adapter():
        yield


PEFT_STORAGE = dict(save=_save, load=_load, fmt="peft", switch_off=_off)
MERGEABLE = dict(can_merge=True, merge_fn=_merge)
