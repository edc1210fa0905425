"""One shape for the many PEFT tuners that wrap chosen layers (VeRA, OFT, BOFT, LoHa, LoKr, FourierFT, HRA,
MiSS, C3A, ...): a PEFT config built from the knobs, targets discovered from the model, the trainable count
taken on a meta-device copy (PEFT's own layers, no memory), PEFT's save format, and merge where PEFT merges.

    VERA = register(tuner("vera", "VeRA", "...", "VeraConfig", KNOBS, learning_rate=4e-3))

Knob names are the PEFT config's field names, so ``build`` passes them through unchanged; only ``targets``
is the studio's own (names or groups, expanded from what the model has).
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any, Callable

from studio import meta_model
from studio.config import ConfigError
from studio.method_defs.peft_common import MERGEABLE, PEFT_STORAGE, prepare, wrap
from studio.method_defs.lora import resolve_targets
from studio.method_api import Knob, Method, MethodSpec, get

__all__ = ["tuner", "targets_knob", "peft_kwargs", "layer_sizes", "common_divisor", "layer_targets", "LINEAR_ONLY_NOTE"]

LINEAR_ONLY_NOTE = "takes torch.nn.Linear layers only"


def targets_knob(default: list[str] | None = None, what: str = "layers to adapt") -> Knob:
    """The ``targets`` knob every layer-wrapping tuner has (names or attention / mlp / all-linear)."""
    return Knob("targets", list, list(default or ["attention"]),
                f"{what}: names (q_proj, c_attn...) or attention / mlp / all-linear", picks="layers")


def peft_kwargs(values: dict, model, names: list[str]) -> dict:
    """The PEFT config's fields: every knob but the picked names under its own name (the default ``build``)."""
    return {k: v for k, v in values.items() if k not in ("targets", "norms")}


def _modules(model, names: list[str]) -> list:
    return [m for full, m in model.named_modules() if any(full == n or full.endswith("." + n) for n in names)]


def layer_sizes(model, names: list[str]) -> list[tuple[int, int]]:
    """(in_features, out_features) of every targeted layer (works on a meta-device copy too)."""
    out = []
    for m in _modules(model, names):
        if hasattr(m, "in_features"):
            out.append((m.in_features, m.out_features))
        elif getattr(m, "weight", None) is not None and m.weight.dim() == 2:  # Conv1D stores (in, out)
            out.append((m.weight.shape[0], m.weight.shape[1]))
    return out


def common_divisor(model, names: list[str], cap: int, of: str = "both") -> int:
    """The largest number up to ``cap`` dividing every targeted layer's sizes (``of``: in, out or both).

    C3A's block size, VBLoRA's vector length and RoAd's group size must divide the layers' sizes; the
    paper's advice where a person has no preference is the greatest common divisor.
    """
    sizes = [s for i, o in layer_sizes(model, names) for s in ((i,) if of == "in" else (o,) if of == "out" else (i, o))]
    g = functools.reduce(math.gcd, sizes, 0) or 1
    return max(d for d in range(1, min(g, cap) + 1) if g % d == 0)


def _linear_only(name: str, model, names: list[str]) -> None:
    import torch

    odd = sorted({n for n in names for full, m in model.named_modules()
                  if (full == n or full.endswith("." + n)) and not isinstance(m, torch.nn.Linear)})
    if odd:
        kind = getattr(getattr(model, "config", None), "model_type", "this model")
        raise ConfigError(f"{name}: PEFT's tuner {LINEAR_ONLY_NOTE}; {kind}'s {', '.join(odd)} is not one "
                          "(GPT-2 style models use transformers' Conv1D); pick lora, ia3, vera or fourierft there")


def _config(name: str, cls_name: str, build, pick, model, values: dict, linear_only: bool):
    import peft

    names = pick(model, values)
    if not names:
        raise ConfigError(f"{name}: no layers to adapt in this model; name some in method.targets")
    if linear_only:
        _linear_only(name, model, names)
    try:
        return getattr(peft, cls_name)(target_modules=names, task_type="CAUSAL_LM", **build(values, model, names))
    except (ValueError, TypeError) as err:  # PEFT's own check of the knobs, as one line
        raise ConfigError(f"{name}: {str(err).splitlines()[0]}") from None


def layer_targets(model, values: dict) -> list[str]:
    """The layers ``values['targets']`` names, groups expanded (the default way a tuner picks targets)."""
    return resolve_targets(model, values["targets"])


def _wrap(name: str, model, config):
    try:
        return wrap(model, config)
    except (ValueError, TypeError, NotImplementedError) as err:  # a size PEFT refuses for this model
        raise ConfigError(f"{name}: {str(err).splitlines()[0]}") from None


@functools.lru_cache(maxsize=256)
def _meta_count(name: str, arch, frozen: tuple) -> int:
    # PEFT's own layers on a meta-device copy: exactly what apply makes trainable, without weights or memory
    import peft

    model = meta_model.for_arch(arch)
    if model is None:
        raise ConfigError(f"{name}: {arch.model_type} cannot be built without its weights here, so its trainable "
                          "count is known only after loading")
    values = get(name).values(MethodSpec(name, {k: list(v) if isinstance(v, tuple) else v for k, v in frozen}))
    meta = copy.deepcopy(model)  # the cached copy stays unwrapped for the next caller
    try:
        wrapped = peft.get_peft_model(meta, _CONFIGS[name](meta, values), low_cpu_mem_usage=True)
    except (ValueError, TypeError, NotImplementedError) as err:
        raise ConfigError(f"{name}: {str(err).splitlines()[0]}") from None
    return sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


_CONFIGS: dict[str, Callable[[Any, dict], Any]] = {}


def _freeze(spec: MethodSpec) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in spec.knobs.items()))


def tuner(name: str, title: str, summary: str, config: str, knobs: tuple[Knob, ...], *, learning_rate: float,
          build: Callable[[dict, Any, list[str]], dict] = peft_kwargs, linear_only: bool = False,
          pick: Callable[[Any, dict], list[str]] = layer_targets,
          merge_refusal: str = "", checks: Callable[[dict], list[str]] | None = None) -> Method:
    """A Method for a PEFT tuner that wraps chosen layers.

    Args:
        config: the PEFT config class's name (``VeraConfig``); peft is imported only when a model is wrapped.
        build: (knob values, model, target names) -> the config's other fields; knobs pass through by default.
        pick: (model, knob values) -> the module names PEFT wraps (default: the ``targets`` layers).
        linear_only: PEFT's tuner takes ``torch.nn.Linear`` only: GPT-2's Conv1D layers are refused in one line.
        merge_refusal: why PEFT cannot merge this tuner; empty means it merges.
    """
    _CONFIGS[name] = lambda model, values: _config(name, config, build, pick, model, values, linear_only)

    def apply(model, spec, ctx):
        values = get(name).values(spec)
        cfg = _CONFIGS[name](model, values)  # checked before anything changes the model
        return _wrap(name, prepare(model, ctx), cfg)

    def trainable(arch, spec) -> int:
        return _meta_count(name, arch, _freeze(spec))

    merging = dict(can_merge=False, merge_refusal=merge_refusal) if merge_refusal else MERGEABLE
    return Method(name=name, title=title, summary=summary, knobs=knobs, apply=apply, trainable=trainable,
                  family="peft", learning_rate=learning_rate, mixed_ok=False, checks=checks, **merging,
                  **PEFT_STORAGE)
