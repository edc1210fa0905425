"""Bottleneck adapters (Houlsby, Pfeiffer, parallel), implemented in studio.adapters."""

from __future__ import annotations

from pathlib import Path

from studio import adapters
from studio.method_api import Knob, MemoryFacts, Method, MethodSpec, register

KNOBS = (
    Knob("size", int, 64, "bottleneck width: capacity and adapter size grow with it", min=1, max=8192, step=1),
    Knob("style", str, "houlsby", "houlsby: after attention and MLP; pfeiffer: after the MLP only; "
         "parallel: beside the MLP", choices=tuple(adapters.STYLES)),
    Knob("placement", str, "both", "houlsby only: serial adapters after attention and MLP (both), or after one",
         choices=tuple(adapters.PLACEMENTS)),
    Knob("activation", str, "relu", "nonlinearity inside the bottleneck", choices=tuple(adapters.ACTIVATIONS)),
    Knob("scaling", float, 1.0, "multiplies the adapter output (He et al. use 4 for parallel)", min=0.0, max=100.0),
    Knob("dropout", float, 0.0, "dropout inside the bottleneck", min=0.0, max=0.9, step=0.01),
)


def _config(spec: MethodSpec) -> adapters.AdapterConfig:
    return adapters.AdapterConfig(**ADAPTER.values(spec))


def _apply(model, spec, ctx):
    model = adapters.add(model, _config(spec))
    if ctx.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def _checks(values: dict) -> list[str]:
    mismatch = adapters.placement_mismatch(values["style"], values["placement"])
    return [f"placement: {mismatch}"] if mismatch else []


def _parts(values: dict) -> tuple[str, ...]:
    return adapters.sites(adapters.AdapterConfig(**values))


def _trainable(arch, spec) -> int:
    return arch.num_layers * adapters.params_per_block(arch.hidden_size, _config(spec))


def _save(model, spec: MethodSpec, folder: Path) -> None:
    adapters.save(model, folder)


def _load(base, folder: Path, spec: MethodSpec):
    return adapters.load(base, folder)


ADAPTER = register(Method(
    name="adapter", title="Bottleneck adapters",
    summary="small bottleneck layers inside each block (Houlsby / Pfeiffer / parallel); the base stays untouched",
    knobs=KNOBS, apply=_apply, trainable=_trainable, family="adapter", can_merge=False, learning_rate=1e-4,
    merge_refusal="bottleneck adapters add a nonlinearity, which cannot be folded into the base weights",
    mixed_ok=False, save=_save, load=_load, fmt="adapter", switch_off=adapters.disabled,
    checks=_checks, memory=MemoryFacts(adapter_parts=_parts),
))
