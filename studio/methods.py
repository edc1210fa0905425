"""One registry of fine-tuning methods.

Each method is one ``Method`` entry: its knobs (which the UI turns into widgets, the CLI into
``--set method.KEY=...`` and the validator into messages), ``apply`` (make a loaded model trainable
the method's way) and ``trainable`` (how many parameters it trains, from the architecture alone).

    m = methods.get("lora")
    model = m.apply(model, spec, Context(tokenizer=tok, total_steps=100))
    n = m.trainable(arch, spec)    # == number of requires_grad parameters after apply
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from studio.config import ConfigError, MethodSpec

__all__ = ["Knob", "Method", "Context", "register", "get", "names", "all_methods", "check_spec"]


@dataclass(frozen=True)
class Knob:
    """One setting of a method: typed, with a default, a range or choices, and one line of help."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None

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
                "step": self.step}


@dataclass
class Context:
    """What ``apply`` may need beyond the model: the tokenizer, the run's total steps, the model spec."""

    tokenizer: Any = None
    total_steps: int | None = None
    model_spec: Any = None
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class Method:
    """A fine-tuning method.

    Attributes:
        family: 'lora' (a PEFT tuner that can mix base and tuned rows in one batch), 'peft' (another
            PEFT tuner, switchable off), 'adapter' (the studio's bottleneck adapters) or 'weights'
            (full/freeze/bitfit: the tuned model is a changed copy of the base).
        can_merge: whether the result can be merged into the base weights.
        learning_rate: default learning rate (PEFT methods want about 10x that of full fine-tuning).
        quantized: the base must be loaded this way ('4bit', '8bit') or None.
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

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "summary": self.summary, "family": self.family,
                "can_merge": self.can_merge, "learning_rate": self.learning_rate, "quantized": self.quantized,
                "knobs": [k.to_dict() for k in self.knobs]}


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (one call per method)."""
    _REGISTRY[method.name] = method
    return method


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
    """Every problem with a MethodSpec: an unknown name, unknown knobs, values out of range."""
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
    return out
