"""The method API: what a fine-tuning method is (``Method`` and its ``Knob``s) and the registry it joins.

A method definition (one module in ``studio/method_defs/``) builds a ``Method`` and calls ``register``.
This module holds the types and the registry only; ``studio.methods`` is the facade that loads every
definition and offers what the trainer, chat and export call (save, load, merge, switch off).

    m = Method(name="lora", title=..., knobs=(Knob("r", int, 8, "rank", min=1),), apply=..., ...)
    register(m)
    get("lora").values(spec)      # every knob's value, its own where set, else the default
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

from studio.config import ConfigError, MethodSpec, ModelSpec, Setting, find_setting, knob_problems

__all__ = ["Knob", "Method", "MemoryFacts", "Context", "MergeRefused", "register", "get", "names", "all_methods",
           "check_spec", "model_spec_for", "quantised_refusal", "tag", "method_of"]


class MergeRefused(ConfigError):
    """The method's result cannot be merged into the base weights; the message says why."""


# A method's settings are called knobs; they are config Settings, so one range check and one widget builder
# serve both.
Knob = Setting


@dataclass(frozen=True)
class MemoryFacts:
    """What the memory estimate (studio/memory.py) reads about a method beyond its trainable count."""

    virtual_tokens: str = "input"  # where num_virtual_tokens go: 'input' (every sequence grows: prompt
    # tuning, P-tuning) or 'kv' (only the attention keys and values grow: prefix tuning)
    adapter_parts: Callable[[dict], tuple] | None = None  # knob values -> the block parts ('attention',
    # 'mlp') that get a bottleneck adapter, one site each
    kbit_upcast: bool = True  # on a quantised base, prepare_model_for_kbit_training casts the rest to fp32

    def parts(self, values: dict) -> tuple:
        """The block parts with a bottleneck adapter for these knob values (() for methods without them)."""
        return tuple(self.adapter_parts(values)) if self.adapter_parts else ()


@dataclass
class Context:
    """What ``apply`` may need beyond the model: the tokenizer, the run's total steps, the model spec."""

    tokenizer: Any = None
    total_steps: int | None = None
    model_spec: Any = None
    gradient_checkpointing: bool = False
    batches: Callable[[], Any] | None = None  # -> an iterable of the run's training batches (EVA, CorDA init)
    progress: Callable[[str], None] | None = None  # one line of progress for a long step inside apply


@dataclass(frozen=True)
class Method:
    """A fine-tuning method.

    Attributes:
        family: 'lora' (LoRA and its variants through PEFT), 'peft' (another PEFT tuner: IA3, prompt
            methods), 'adapter' (the studio's bottleneck adapters) or 'weights' (full/freeze/bitfit: the
            tuned model is a changed copy of the base). PEFT and adapter results can be switched off.
        can_merge: whether the result can be merged into the base weights.
        learning_rate: default learning rate (PEFT methods want about 10x that of full fine-tuning).
        quantized: the base must be loaded this way ('4bit', '8bit') or None.
        merge_refusal: why merging is refused (shown to the person) when ``can_merge`` is false.
        overrides: knob values -> ModelSpec fields this method sets (see ``model_overrides``).
        mixed_ok: knob values -> whether base and tuned rows can share one batch.
        step_hook: ``(model, global_step)`` run after each optimizer step, before zero_grad.
        checks: knob values -> problems with how they combine (each knob alone is checked by its range).
        save, load, merge_fn: how the result is stored, read back onto a base, and merged.
        fmt: the result's format on disk: 'peft', 'adapter' or 'weights'.
        memory: the facts the memory estimate reads (where virtual tokens go, adapter sites per block).
        switch_off: ``model -> context manager`` that runs the tuned model as its base (PEFT tuners and
            bottleneck adapters); None where the tuned weights replaced the base ones.
        rank_knob: the knob that is a LoRA rank; preflight holds it against each targeted layer's smaller size.
        trial_forward: the method changes the forward's inputs or attention cache, so preflight runs one
            forward pass on a meta-device copy to learn whether the model's own forward takes it.
        trial_refusal: ``(model_config, peft_config, why) -> line`` explaining a failed trial forward in the
            method's own words; None gives the general line.
        checkpointing_refusal: why the method cannot train with gradient checkpointing ('' when it can).
        reference_refusal: why the method cannot train an objective with a reference model ('' when it can).
        machine_refusal: ``(knob values, device) -> line`` why these knobs cannot run on this machine's device
            ('cuda' or 'cpu'), '' when they can; preflight asks it before any weights load (QLoRA's LoftQ).
    """

    name: str
    title: str
    summary: str
    knobs: tuple[Knob, ...]
    apply: Callable[..., Any]
    trainable: Callable[..., int]
    family: str
    can_merge: bool
    learning_rate: float
    quantized: str | None = None
    merge_refusal: str = ""
    overrides: Callable[[dict], dict] | None = None
    mixed_ok: Callable[[dict], bool] | bool = False
    step_hook: Callable[[Any, int], None] | None = None
    checks: Callable[[dict], list[str]] | None = None
    save: Callable[..., None] | None = None
    load: Callable[..., Any] | None = None
    merge_fn: Callable[[Any], Any] | None = None
    fmt: str = "peft"
    memory: MemoryFacts = MemoryFacts()
    switch_off: Callable[[Any], ContextManager] | None = None
    rank_knob: str = ""
    trial_forward: bool = False
    trial_refusal: Callable[[Any, Any, str], str] | None = None
    checkpointing_refusal: str = ""
    reference_refusal: str = ""
    machine_refusal: Callable[[dict, str], str] | None = None

    def knob(self, name: str, prefix: str = "method") -> Knob:
        """The knob called ``name`` (ConfigError naming the allowed ones)."""
        return find_setting(self.knobs, name, prefix, self.name)

    def defaults(self) -> dict:
        return {k.name: k.default for k in self.knobs}

    def values(self, spec: MethodSpec) -> dict:
        """Every knob's value for ``spec``: its own where set, else the default."""
        return {**self.defaults(), **{k: self.knob(k).coerce(v) for k, v in spec.knobs.items()}}

    def model_overrides(self, spec: MethodSpec) -> dict:
        """The ModelSpec fields this method sets for ``spec`` (QLoRA: quantization...); {} for most."""
        return self.overrides(self.values(spec)) if self.overrides else {}

    def mixed_batch(self, spec: MethodSpec | None = None) -> bool:
        """Whether base rows and tuned rows can run in one batch (PEFT ``adapter_names``)."""
        if callable(self.mixed_ok):
            return bool(self.mixed_ok(self.values(spec or MethodSpec(self.name))))
        return bool(self.mixed_ok)

    def on_step(self, model, global_step: int) -> None:
        """Run the per-step hook, if any: after ``optimizer.step()``, before ``zero_grad()``."""
        if self.step_hook is not None:
            self.step_hook(model, global_step)

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "summary": self.summary, "family": self.family,
                "can_merge": self.can_merge, "merge_refusal": self.merge_refusal or None,
                "learning_rate": self.learning_rate, "quantized": self.quantized,
                "mixed_batch": self.mixed_batch(), "has_step_hook": self.step_hook is not None,
                "result_format": self.fmt, "knobs": [k.to_dict() for k in self.knobs]}


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (one call per method). Its ``apply`` gets the shared checks and tag."""
    method = dataclasses.replace(method, apply=_checked_apply(method))
    _REGISTRY[method.name] = method
    return method


def _checked_apply(method: Method) -> Callable[..., Any]:
    raw = method.apply

    def apply(model, spec: MethodSpec, ctx: Context | None = None):
        quantised = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        if quantised and method.family == "weights":
            raise ConfigError(quantised_refusal(method))
        return tag(raw(model, spec, ctx or Context()), spec)

    apply.__doc__ = raw.__doc__
    return apply


def tag(model, spec: MethodSpec):
    """Remember which method made ``model`` (read back by merge, adapter_off and save_result)."""
    model._studio_method = MethodSpec(spec.name, dict(spec.knobs))
    return model


def method_of(model) -> MethodSpec | None:
    """The MethodSpec that made ``model`` (set by apply and load_result), or None for a plain model."""
    return getattr(model, "_studio_method", None)


def quantised_refusal(method: Method) -> str:
    """Why a method that changes the base weights cannot run on a quantised base (shown before and at load)."""
    return (f"{method.name} changes the base weights, which a quantised base cannot train; "
            "set model.quantization: none or pick qlora / lora_8bit")


def get(name: str) -> Method:
    """The method called ``name``, or a ConfigError listing the known ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"method.name: unknown method {name!r} (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


def names() -> list[str]:
    return list(_REGISTRY)


def all_methods() -> list[Method]:
    return list(_REGISTRY.values())


def check_spec(spec: MethodSpec, prefix: str = "method") -> list[str]:
    """Every problem with a MethodSpec: an unknown name, unknown knobs, values out of range, knobs that clash."""
    try:
        method = get(spec.name)
    except ConfigError as err:
        return err.problems
    out = knob_problems(method.knobs, spec.knobs, prefix, method.name)
    if not out and method.checks is not None:
        out += [f"{prefix}.{line}" for line in method.checks(method.values(spec))]
    return out




def model_spec_for(model_spec: ModelSpec, method_spec: MethodSpec) -> ModelSpec:
    """The ModelSpec to load the base with: ``model_spec`` with the method's overrides applied."""
    overrides = get(method_spec.name).model_overrides(method_spec)
    return dataclasses.replace(model_spec, **overrides) if overrides else model_spec
