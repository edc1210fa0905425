"""RunConfig: the one description of a run, shared by the UI, the CLI, the estimator and the trainer.

A RunConfig has four sections, each a dataclass: ``model``, ``method``, ``data`` and ``train``.
Every field carries its help text, allowed values and range in ``metadata``, so the validator,
``--help``, the CLI's ``--set`` parser and the UI's tooltips all read one source.

    cfg = RunConfig.load("presets/quickstart.yaml")
    cfg = cfg.with_overrides(["train.max_steps=20", "method.r=16"])
    cfg.save("runs/x/config.yaml")
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "ModelSpec",
    "MethodSpec",
    "DataSpec",
    "DistributedSpec",
    "TrainSpec",
    "RunConfig",
    "parse_value",
]


class ConfigError(ValueError):
    """Bad configuration. ``problems`` holds one readable line per problem."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


def _f(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
       max: float | None = None, factory: Any = None) -> Any:
    """A dataclass field with its help text and allowed values in metadata."""
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """Shared behaviour of the config sections: checking, dict round trip, typed overrides."""

    def problems(self, prefix: str) -> list[str]:
        """Every problem with this section's values, as readable lines."""
        out = []
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if f.name.startswith("_"):
                continue
            value, meta, key = getattr(self, f.name), f.metadata, f"{prefix}.{f.name}"
            if value is None and _allows_none(hints[f.name]):
                continue
            if not _type_ok(value, hints[f.name]):
                out.append(f"{key}: expected {_type_name(hints[f.name])}, got {value!r}")
                continue
            if meta.get("choices") and value not in meta["choices"]:
                out.append(f"{key}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
            if meta.get("min") is not None and isinstance(value, (int, float)) and value < meta["min"]:
                out.append(f"{key}: {value} is below the minimum {meta['min']}")
            if meta.get("max") is not None and isinstance(value, (int, float)) and value > meta["max"]:
                out.append(f"{key}: {value} is above the maximum {meta['max']}")
        return out

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, _Section) else value
        return out

    @classmethod
    def from_dict(cls, data: dict | None, prefix: str):
        """Build the section from a mapping; unknown keys are errors naming the allowed keys."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix}: expected a mapping, got {data!r}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError([f"{prefix}.{k}: unknown key (allowed: {', '.join(sorted(names))})" for k in unknown])
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in data.items():
            sub = _section_type(hints[key])
            kwargs[key] = sub.from_dict(value, f"{prefix}.{key}") if sub else _coerce(value, hints[key])
        return cls(**kwargs)

    def set(self, key: str, text: str, prefix: str) -> None:
        """Set ``key`` (dotted below this section) from its text form, typed by the field."""
        head, _, rest = key.partition(".")
        names = {f.name for f in dataclasses.fields(self)}
        if head not in names:
            raise ConfigError(f"{prefix}.{head}: unknown key (allowed: {', '.join(sorted(names))})")
        current = getattr(self, head)
        if isinstance(current, _Section):
            current.set(rest, text, f"{prefix}.{head}")
            return
        if rest:
            raise ConfigError(f"{prefix}.{head}: is not a section")
        hint = typing.get_type_hints(type(self))[head]
        setattr(self, head, _coerce(parse_value(text), hint))


def parse_value(text: str) -> Any:
    """Parse a command-line value the way YAML would (numbers, booleans, lists, null)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _allows_none(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _section_type(hint: Any):
    return hint if isinstance(hint, type) and issubclass(hint, _Section) else None


def _base_types(hint: Any) -> tuple:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for a in typing.get_args(hint) for t in _base_types(a))
    origin = typing.get_origin(hint)
    return (origin,) if origin else (hint,)


def _type_ok(value: Any, hint: Any) -> bool:
    allowed = tuple(t for t in _base_types(hint) if t is not type(None))
    if isinstance(value, bool):
        return bool in allowed
    if float in allowed and isinstance(value, int):
        return True
    return isinstance(value, allowed)


def _type_name(hint: Any) -> str:
    return " or ".join(getattr(t, "__name__", str(t)) for t in _base_types(hint) if t is not type(None))


def _coerce(value: Any, hint: Any) -> Any:
    """Light coercion: ints to floats, numeric strings (1e-4) to numbers. Wrong types stay for problems()."""
    allowed = _base_types(hint)
    if isinstance(value, str) and (float in allowed or int in allowed) and str not in allowed:
        try:
            number = float(value)
            return int(number) if int in allowed and number.is_integer() and float not in allowed else number
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool) and float in allowed and int not in allowed:
        return float(value)
    if isinstance(value, str) and list in allowed:
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


@dataclass
class ModelSpec(_Section):
    """Which model to start from and how to load it."""

    id: str = _f("embedded", "'embedded' (SmolLM2-135M-Instruct, shipped), a local folder, a hub id or a .gguf file")
    revision: str | None = _f(None, "hub revision (branch, tag or commit); none means the default branch")
    dtype: str = _f("auto", "weight dtype: auto picks bf16 where the hardware has it, else fp32",
                    choices=("auto", "bf16", "fp16", "fp32"))
    quantization: str = _f("none", "load the base quantised through bitsandbytes (QLoRA needs nf4 or fp4)",
                           choices=("none", "8bit", "nf4", "fp4"))
    double_quant: bool = _f(True, "quantise the 4-bit constants again (~0.4 bit/param less, slightly slower)")
    compute_dtype: str = _f("auto", "dtype the 4-bit layers compute in", choices=("auto", "bf16", "fp16", "fp32"))
    attn_implementation: str = _f("sdpa", "attention kernel: eager keeps heads x seq^2 scores in memory, sdpa does not",
                                  choices=("eager", "sdpa", "flash_attention_2"))
    trust_remote_code: bool = _f(False, "run code shipped with the model; only for sources you trust")


@dataclass
class MethodSpec:
    """The fine-tuning method and its knobs. Knobs are declared by the method registry (studio.methods)."""

    name: str = "lora"
    knobs: dict = field(default_factory=dict)

    def problems(self, prefix: str = "method") -> list[str]:
        from studio import methods  # the registry knows each method's knobs

        return methods.check_spec(self, prefix)

    def get(self, key: str) -> Any:
        """A knob's value, falling back to the registry default."""
        from studio import methods

        if key in self.knobs:
            return self.knobs[key]
        return methods.get(self.name).knob(key).default

    def to_dict(self) -> dict:
        return {"name": self.name, **self.knobs}

    @classmethod
    def from_dict(cls, data: dict | None, prefix: str = "method") -> "MethodSpec":
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix}: expected a mapping, got {data!r}")
        data = dict(data)
        name = data.pop("name", "lora")
        if not isinstance(name, str):
            raise ConfigError(f"{prefix}.name: expected a method name, got {name!r}")
        return cls(name=name, knobs=data)

    def set(self, key: str, text: str, prefix: str = "method") -> None:
        from studio import methods

        if key == "name":
            self.name = text.strip()
            return
        knob = methods.get(self.name).knob(key, prefix)
        self.knobs[key] = knob.coerce(parse_value(text))


@dataclass
class DataSpec(_Section):
    """Where the training examples come from and how they become tokens."""

    path: str = _f("presets/data/identity.jsonl",
                   "a .json/.jsonl/.csv/.parquet file, a folder of them, or a hub dataset name")
    format: str = _f("auto", "row format; auto detects it from the columns",
                     choices=("auto", "alpaca", "chat", "sharegpt", "prompt_completion", "text"))
    columns: dict = _f(None, "map the format's column names to yours, e.g. {instruction: question}", factory=dict)
    hub_config: str | None = _f(None, "hub dataset configuration name")
    split: str = _f("train", "hub dataset split")
    val_path: str | None = _f(None, "a separate validation file")
    val_fraction: float = _f(0.0, "fraction of rows held out for evaluation", min=0.0, max=0.5)
    train_on: str = _f("assistant", "which tokens carry loss: assistant answers only, or every token",
                       choices=("assistant", "all"))
    packing: bool = _f(True, "pack several examples per row (no attention across them): no padding, faster")
    system_prompt: str | None = _f(None, "system message added to rows that have none")
    max_rows: int | None = _f(None, "use only the first N rows", min=1)


@dataclass
class DistributedSpec(_Section):
    """How the run spreads over several GPUs (through accelerate)."""

    strategy: str = _f("none", "none: one process; ddp copies the model; fsdp and zero3 shard it; zero2 shards optimizer state",
                       choices=("none", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"))
    offload: bool = _f(False, "offload parameters/optimizer state to CPU memory (FSDP / DeepSpeed): less VRAM, slower")
    mixed_precision: str = _f("bf16", "mixed precision accelerate uses", choices=("no", "bf16", "fp16"))


@dataclass
class TrainSpec(_Section):
    """How long and how the run trains."""

    epochs: float = _f(3.0, "passes over the data (ignored when max_steps is set)", min=0.0, max=1000.0)
    max_steps: int | None = _f(None, "stop after this many optimizer steps", min=1)
    micro_batch_size: int = _f(4, "rows per forward pass on each device", min=1, max=4096)
    grad_accum: int = _f(1, "micro-batches per optimizer step", min=1, max=4096)
    max_seq_len: int = _f(512, "tokens per row; longer examples are cut", min=8, max=1_048_576)
    learning_rate: float | None = _f(None, "peak learning rate; none takes the method's default", min=1e-8, max=1.0)
    scheduler: str = _f("cosine", "learning-rate schedule", choices=("cosine", "linear", "constant", "constant_with_warmup"))
    warmup_ratio: float = _f(0.03, "fraction of steps spent warming up", min=0.0, max=0.5)
    weight_decay: float = _f(0.0, "AdamW weight decay", min=0.0, max=1.0)
    max_grad_norm: float = _f(1.0, "clip gradients to this norm (0 turns clipping off)", min=0.0)
    optimizer: str = _f("adamw", "optimizer; adamw_fused: one fused kernel for every tensor (same result, a faster "
                        "step, no step temporaries); 8-bit and paged variants need bitsandbytes",
                        choices=("adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd"))
    gradient_checkpointing: bool = _f(False, "recompute activations in backward: much less memory, ~30% slower")
    loss_chunk_tokens: int = _f(0, "make the loss's logits this many loss tokens at a time, never the whole "
                                "batch x seq x vocab in fp32: much less memory at long sequences, same loss "
                                "(0: all at once)", min=0, max=65_536)
    precision: str = _f("auto", "auto: bf16 on GPUs and CPUs that have it, else fp32",
                        choices=("auto", "bf16", "fp16", "fp32"))
    seed: int = _f(42, "random seed for weights init, shuffling and dropout")
    logging_steps: int = _f(1, "log every N steps", min=1)
    eval_steps: int | None = _f(None, "evaluate every N steps (needs a validation split)", min=1)
    save_steps: int | None = _f(None, "checkpoint every N steps (for resume)", min=1)
    early_stopping_patience: int = _f(0, "stop after N evaluations without a better eval loss (0: off)", min=0)
    output_dir: str = _f("runs", "folder that holds the run folders")
    run_name: str | None = _f(None, "name of the run folder; none picks one from the method and the time")
    distributed: DistributedSpec = _f(None, "multi-GPU settings", factory=DistributedSpec)


_SECTIONS = {"model": ModelSpec, "method": MethodSpec, "data": DataSpec, "train": TrainSpec}


@dataclass
class RunConfig:
    """A whole run: model, method, data and training settings."""

    model: ModelSpec = field(default_factory=ModelSpec)
    method: MethodSpec = field(default_factory=MethodSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    def problems(self) -> list[str]:
        """Every problem in the config, one readable line each (empty when valid)."""
        return [p for name in _SECTIONS for p in getattr(self, name).problems(name)]

    def validate(self) -> "RunConfig":
        """Raise ConfigError listing every problem at once; return self when valid."""
        found = self.problems()
        if found:
            raise ConfigError(found)
        return self

    def to_dict(self) -> dict:
        return {name: getattr(self, name).to_dict() for name in _SECTIONS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict | None) -> "RunConfig":
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"a run config is a mapping with sections {', '.join(_SECTIONS)}, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ConfigError([f"{k}: unknown section (allowed: {', '.join(_SECTIONS)})" for k in unknown])
        return cls(**{k: _SECTIONS[k].from_dict(data.get(k), k) for k in _SECTIONS}).validate()

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> "RunConfig":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{source}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such preset file")
        return cls.from_yaml(path.read_text(encoding="utf-8"), str(path))

    def save(self, path: str | Path) -> Path:
        """Write the config as YAML atomically (a temporary name, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_yaml(), encoding="utf-8")
        tmp.replace(path)
        return path

    def with_overrides(self, assignments: list[str]) -> "RunConfig":
        """A copy with ``section.key=value`` assignments applied and validated."""
        cfg = RunConfig.from_dict(self.to_dict()) if assignments else self
        found: list[str] = []
        for item in assignments:
            key, sep, text = item.partition("=")
            section, _, rest = key.strip().partition(".")
            if not sep or not rest:
                found.append(f"--set {item!r}: expected section.key=value, e.g. train.max_steps=20")
            elif section not in _SECTIONS:
                found.append(f"--set {item!r}: unknown section {section!r} (allowed: {', '.join(_SECTIONS)})")
            else:
                try:
                    getattr(cfg, section).set(rest, text, section)
                except ConfigError as err:
                    found += err.problems
        found += [p for p in cfg.problems() if p not in found]
        if found:
            raise ConfigError(found)
        return cfg


def field_help(section: type, name: str) -> dict:
    """Help text, choices and range of one field, for the CLI and the UI."""
    return dict(next(f for f in dataclasses.fields(section) if f.name == name).metadata)
