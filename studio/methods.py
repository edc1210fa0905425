"""One registry of fine-tuning methods.

Each method is one ``Method`` entry: its knobs (which the UI turns into widgets, the CLI into
``--set method.KEY=...`` and the validator into messages), ``apply`` (make a loaded model trainable
the method's way) and ``trainable`` (how many parameters it trains, from the architecture alone).

    m = methods.get("lora")
    model = m.apply(model, spec, Context(tokenizer=tok, total_steps=100))
    n = m.trainable(arch, spec)    # == number of requires_grad parameters after apply

Contract for the code that trains, saves, loads, chats and exports (read this before calling in):

1. Load the base through ``methods.model_spec_for(cfg.model, cfg.method)``, not ``cfg.model``: a method
   may set how the base is loaded (QLoRA sets ``quantization`` nf4/fp4, ``double_quant`` and
   ``compute_dtype`` from its own knobs; ``lora_8bit`` sets ``quantization: 8bit``). The method's knobs
   win over the ModelSpec's fields; other methods change nothing. ``Method.model_overrides(spec)`` is
   the dict of ModelSpec fields it sets. Methods that change the base weights (full, freeze, bitfit)
   refuse a quantised base with a ConfigError.
2. ``model = m.apply(model, cfg.method, Context(tokenizer=tok, total_steps=N, model_spec=...,
   gradient_checkpointing=cfg.train.gradient_checkpointing))``. Always use the returned model (PEFT
   methods wrap it). ``total_steps`` is required by AdaLoRA (its rank schedule is tied to it).
   ``apply`` turns on gradient checkpointing itself when ``ctx.gradient_checkpointing`` is true (or a
   QLoRA knob asks for it), in the way that keeps gradients flowing into frozen-embedding models.
3. Per-step hook: ``m.on_step(model, global_step)`` must run after ``optimizer.step()`` and before
   ``zero_grad()`` (AdaLoRA reallocates ranks from the gradients there; other methods have none).
   With the HF Trainer, pass ``callbacks=methods.trainer_callbacks(m)``; it does exactly that in
   ``on_optimizer_step``.
4. ``methods.save_result(model, cfg.method, folder)`` writes the result (safetensors only) plus
   ``studio_method.json`` (method name and knobs). ``methods.load_result(base, folder)`` reads that
   file, so any folder loads back without knowing its method; load ``base`` with
   ``model_spec_for(model_spec, methods.result_spec(folder))``.
5. ``methods.merge(model)`` returns a plain transformers model for mergeable methods (LoRA family,
   IA3) and raises MergeRefused (a ConfigError) with ``Method.merge_refusal`` otherwise. Merging into a
   quantised base is refused: load the result onto an unquantised base first.
6. ``m.mixed_batch(spec)``: whether base and tuned rows may share one batch (PEFT's ``adapter_names``).
   ``methods.adapter_off(model)`` is a context manager that runs a model as its base (PEFT and
   bottleneck adapters); weights-family results have no base inside and refuse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from studio.config import ConfigError, MethodSpec, ModelSpec

__all__ = ["Knob", "Method", "MemoryFacts", "Context", "MergeRefused", "register", "get", "names", "all_methods",
           "check_spec", "model_spec_for", "quantised_refusal", "trainer_callbacks", "save_result", "finish_result",
           "load_result", "result_spec", "merge", "adapter_off", "count_trainable", "method_of", "RESULT_FILE"]

RESULT_FILE = "studio_method.json"


class MergeRefused(ConfigError):
    """The method's result cannot be merged into the base weights; the message says why."""


@dataclass(frozen=True)
class Knob:
    """One setting of a method: typed, with a default, a range or choices, and one line of help.

    ``picks`` marks a list of names taken from the model: 'layers' (its Linear / Conv1D layers and the
    target groups, ``targets.resolve_layers``) or 'modules' (any module with parameters,
    ``targets.resolve_modules``); preflight checks those names against the model and the UI offers them.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    picks: str = ""

    def coerce(self, value: Any) -> Any:
        """Convert a parsed value to the knob's type where that is lossless (1 -> 1.0, 'a,b' -> [a, b])."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if self.type is list and isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    def problem(self, value: Any, key: str) -> str | None:
        """A readable line if ``value`` is not allowed for this knob, else None."""
        value = self.coerce(value)
        if value is None and self.default is None:
            return None
        ok = isinstance(value, self.type) and not (isinstance(value, bool) and self.type is not bool)
        if not ok:
            return f"{key}: expected {self.type.__name__}, got {value!r}"
        if self.choices is not None:
            bad = [v for v in value if v not in self.choices] if self.type is list else (
                [] if value in self.choices else [value])
            if bad:
                return f"{key}: {bad[0]!r} is not one of {', '.join(map(str, self.choices))}"
        if self.min is not None and isinstance(value, (int, float)) and value < self.min:
            return f"{key}: {value} is below the minimum {self.min}"
        if self.max is not None and isinstance(value, (int, float)) and value > self.max:
            return f"{key}: {value} is above the maximum {self.max}"
        return None

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.type.__name__, "default": self.default, "help": self.help,
                "choices": list(self.choices) if self.choices else None, "min": self.min, "max": self.max,
                "step": self.step, "picks": self.picks or None}


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
    extra: dict = field(default_factory=dict)
    overrides: Callable[[dict], dict] | None = None
    mixed_ok: Callable[[dict], bool] | bool = False
    step_hook: Callable[[Any, int], None] | None = None
    checks: Callable[[dict], list[str]] | None = None
    save: Callable[..., None] | None = None
    load: Callable[..., Any] | None = None
    merge_fn: Callable[[Any], Any] | None = None
    fmt: str = "peft"
    memory: MemoryFacts = MemoryFacts()

    def knob(self, name: str, prefix: str = "method") -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        allowed = ", ".join(k.name for k in self.knobs) or "none"
        raise ConfigError(f"{prefix}.{name}: unknown setting for {self.name} (allowed: {allowed})")

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


def quantised_refusal(method: Method) -> str:
    """Why a method that changes the base weights cannot run on a quantised base (shown before and at load)."""
    return (f"{method.name} changes the base weights, which a quantised base cannot train; "
            "set model.quantization: none or pick qlora / lora_8bit")


def _load_all() -> None:
    # The method modules register themselves on import.
    from studio import method_defs  # noqa: F401


def get(name: str) -> Method:
    """The method called ``name``, or a ConfigError listing the known ones."""
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"method.name: unknown method {name!r} (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


def names() -> list[str]:
    _load_all()
    return list(_REGISTRY)


def all_methods() -> list[Method]:
    _load_all()
    return list(_REGISTRY.values())


def check_spec(spec: MethodSpec, prefix: str = "method") -> list[str]:
    """Every problem with a MethodSpec: an unknown name, unknown knobs, values out of range, knobs that clash."""
    try:
        method = get(spec.name)
    except ConfigError as err:
        return err.problems
    out = []
    for key, value in spec.knobs.items():
        try:
            knob = method.knob(key, prefix)
        except ConfigError as err:
            out += err.problems
            continue
        problem = knob.problem(value, f"{prefix}.{key}")
        if problem:
            out.append(problem)
    if not out and method.checks is not None:
        out += [f"{prefix}.{line}" for line in method.checks(method.values(spec))]
    return out


# --- what the trainer, chat and export call --------------------------------------------------------------

def model_spec_for(model_spec: ModelSpec, method_spec: MethodSpec) -> ModelSpec:
    """The ModelSpec to load the base with: ``model_spec`` with the method's overrides applied."""
    overrides = get(method_spec.name).model_overrides(method_spec)
    return dataclasses.replace(model_spec, **overrides) if overrides else model_spec


def trainer_callbacks(method: Method) -> list:
    """HF Trainer callbacks that run the method's per-step hook; empty for methods without one."""
    if method.step_hook is None:
        return []
    from transformers import TrainerCallback

    class _StepHook(TrainerCallback):
        # on_optimizer_step: after optimizer.step(), before the Trainer zeroes the gradients
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            method.on_step(model, state.global_step)

    return [_StepHook()]


def count_trainable(model) -> int:
    """Parameters that will train (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def tag(model, spec: MethodSpec):
    """Remember which method made ``model`` (read back by merge, adapter_off and save_result)."""
    model._studio_method = MethodSpec(spec.name, dict(spec.knobs))
    return model


def method_of(model) -> MethodSpec | None:
    """The MethodSpec that made ``model`` (set by apply and load_result), or None for a plain model."""
    return getattr(model, "_studio_method", None)


def save_result(model, spec: MethodSpec, folder: str | Path) -> Path:
    """Write the trained result into ``folder`` in the method's format (safetensors) plus studio_method.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    get(spec.name).save(model, spec, folder)
    return finish_result(folder, spec)


def finish_result(folder: str | Path, spec: MethodSpec) -> Path:
    """Mark ``folder``, which holds the method's saved weights, as a result: write studio_method.json."""
    method, folder = get(spec.name), Path(folder)
    info = {"method": spec.name, "knobs": method.values(spec), "format": method.fmt}
    (folder / RESULT_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return folder


def result_spec(folder: str | Path) -> MethodSpec:
    """The MethodSpec a result folder was saved with (from its studio_method.json)."""
    folder = Path(folder)
    path = folder / RESULT_FILE
    if not path.is_file():
        if (folder / "adapter_config.json").is_file():  # a plain PEFT folder from elsewhere
            return _spec_from_peft(folder)
        raise ConfigError(f"{folder}: not a saved result (it has no {RESULT_FILE})")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return MethodSpec(info["method"], dict(info.get("knobs") or {}))
    except (ValueError, KeyError) as err:
        raise ConfigError(f"{path}: unreadable ({err})") from None


def _spec_from_peft(folder: Path) -> MethodSpec:
    kind = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type", "")
    by_type = {"LORA": "lora", "ADALORA": "adalora", "IA3": "ia3", "PREFIX_TUNING": "prefix",
               "PROMPT_TUNING": "prompt", "P_TUNING": "ptuning", "LN_TUNING": "ln_tuning", "MISS": "miss",
               "SUPERTUNING": "supertuning",
               **{t: t.lower() for t in ("LOHA", "LOKR", "GRALORA", "HIRA", "DELORA", "GLORA", "DEFT", "PEANUT",
                                         "LILY", "VERA", "PVERA", "RANDLORA", "VBLORA", "UNILORA", "TINYLORA", "OFT",
                                         "BOFT", "HRA", "ROAD", "PSOFT", "OSF", "FOURIERFT", "WAVEFT", "C3A")}}
    if kind not in by_type:
        raise ConfigError(f"{folder}: PEFT type {kind!r} is not one the studio loads")
    return MethodSpec(by_type[kind], {})


def load_result(base_model, folder: str | Path):
    """Load a saved result onto a freshly loaded base model and return the model to run."""
    spec = result_spec(folder)
    model = get(spec.name).load(base_model, Path(folder), spec)
    return tag(model, spec)


def merge(model):
    """A plain transformers model with the result merged in (LoRA family, IA3); MergeRefused otherwise."""
    spec = method_of(model)
    if spec is None:
        raise MergeRefused("this model carries no studio method result to merge")
    method = get(spec.name)
    if not method.can_merge or method.merge_fn is None:
        raise MergeRefused(f"{method.name}: cannot merge: {method.merge_refusal}")
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        raise MergeRefused(f"{method.name}: merging into a quantised base loses precision; load the result "
                           "onto an unquantised base (model.quantization: none) and merge that")
    return method.merge_fn(model)


@contextlib.contextmanager
def adapter_off(model):
    """Run ``model`` as its base inside the block (PEFT tuners and bottleneck adapters)."""
    spec = method_of(model)
    method = get(spec.name) if spec else None
    switch = method.extra.get("adapter_off") if method else None
    if switch is None:
        raise ConfigError(f"{spec.name if spec else 'this model'}: the tuned weights replaced the base ones, "
                          "so there is no base to switch to; load the base separately")
    with switch(model):
        yield model
