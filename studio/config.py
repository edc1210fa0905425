"""RunConfig: the one description of a run, shared by the UI, the CLI, the estimator and the trainer.

A RunConfig has four sections, each a dataclass: ``model``, ``method``, ``data`` and ``train``.
Every field carries its help text, allowed values and range in ``metadata``, so the validator,
``--help``, the CLI's ``--set`` parser and the UI's tooltips all read one source.

    cfg = RunConfig.load("presets/quickstart.yaml")
    cfg = cfg.with_overrides(["train.max_steps=20", "method.r=16"])
    cfg.save("runs/x/config.yaml")

This module is the ground floor: it imports nothing from the studio. It checks each field against its own
type and range; a method's knobs are checked against the method registry by ``studio.validation``, which
is what loads user input (``validation.load``, ``validation.with_overrides``). ``Setting`` is the one
description of a setting, for config fields and method knobs alike: one range check, one widget builder.
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
    "Setting",
    "setting",
    "find_setting",
    "knob_problems",
    "ModelSpec",
    "MethodSpec",
    "ObjectiveSpec",
    "DataSpec",
    "DistributedSpec",
    "TrainSpec",
    "RunConfig",
    "NOTHING_TO_TRAIN",
    "mix_problems",
    "parse_value",
]


class ConfigError(ValueError):
    """Bad configuration. ``problems`` holds one readable line per problem."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Setting:
    """One setting (a config field or a method knob): typed, with a default, a range or choices, one line of help.

    ``type`` is a type or a type hint (``int | None``). ``picks`` marks a list of names taken from the model:
    'layers' (its Linear / Conv1D layers and the target groups, ``targets.resolve_layers``) or 'modules' (any
    module with parameters, ``targets.resolve_modules``); preflight checks those names and the UI offers them.
    """

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    picks: str = ""

    @property
    def optional(self) -> bool:
        """Whether None is an allowed value ("not set")."""
        return self.default is None or _allows_none(self.type)

    @property
    def kind(self) -> type:
        """The value's type without ``None`` (``int`` for ``int | None``)."""
        return _base_types(self.type)[0] if self.type is not None else type(None)

    def coerce(self, value: Any) -> Any:
        """Convert a parsed value to the setting's type where that is lossless (1 -> 1.0, 'a,b' -> [a, b])."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if self.type is list and isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    def problem(self, value: Any, key: str) -> str | None:
        """A readable line if ``value`` is not allowed for this setting, else None."""
        value = self.coerce(value)
        if value is None and self.optional:
            return None
        if not _type_ok(value, self.type):
            return f"{key}: expected {_type_name(self.type)}, got {value!r}"
        if self.choices is not None:
            bad = [v for v in value if v not in self.choices] if isinstance(value, list) else (
                [] if value in self.choices else [value])
            if bad:
                return f"{key}: {bad[0]!r} is not one of {', '.join(map(str, self.choices))}"
        if self.min is not None and isinstance(value, (int, float)) and value < self.min:
            return f"{key}: {value} is below the minimum {self.min}"
        if self.max is not None and isinstance(value, (int, float)) and value > self.max:
            return f"{key}: {value} is above the maximum {self.max}"
        return None

    def to_dict(self) -> dict:
        return {"name": self.name, "type": _type_name(self.type), "default": self.default, "help": self.help,
                "choices": list(self.choices) if self.choices else None, "min": self.min, "max": self.max,
                "step": self.step, "picks": self.picks or None}


def find_setting(settings: tuple[Setting, ...], name: str, prefix: str, owner: str) -> Setting:
    """The setting called ``name`` among ``owner``'s (a method's or an objective's knobs), or a ConfigError."""
    for item in settings:
        if item.name == name:
            return item
    allowed = ", ".join(item.name for item in settings) or "none"
    raise ConfigError(f"{prefix}.{name}: unknown setting for {owner} (allowed: {allowed})")


def knob_problems(settings: tuple[Setting, ...], values: dict, prefix: str, owner: str) -> list[str]:
    """One line per value in ``values`` that ``owner``'s settings do not know or do not allow."""
    out = []
    for key, value in values.items():
        try:
            problem = find_setting(settings, key, prefix, owner).problem(value, f"{prefix}.{key}")
        except ConfigError as err:
            out += err.problems
            continue
        if problem:
            out.append(problem)
    return out


def setting(section: type, name: str) -> Setting:
    """The Setting of one config field (``setting(TrainSpec, "max_seq_len")``): its help, range and default."""
    f = next(f for f in dataclasses.fields(section) if f.name == name)
    meta = f.metadata
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return Setting(name, typing.get_type_hints(section)[name], default, meta.get("help", ""),
                   choices=meta.get("choices"), min=meta.get("min"), max=meta.get("max"))


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
        for f in dataclasses.fields(self):
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, _Section):  # a nested section (train.distributed)
                out += value.problems(f"{prefix}.{f.name}")
                continue
            line = setting(type(self), f.name).problem(value, f"{prefix}.{f.name}")
            if line:
                out.append(line)
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
    adapter_from: str | None = _f(None, "a finished run folder (or its adapter/ folder) whose result this run "
                                  "trains further, e.g. DPO on top of an SFT run; the method is that run's")


@dataclass
class MethodSpec:
    """The fine-tuning method and its knobs: a plain record. The method registry (studio.methods) declares each
    method's knobs, their defaults and ranges; ``studio.validation`` checks a spec against it."""

    name: str = "lora"
    knobs: dict = field(default_factory=dict)

    def problems(self, prefix: str = "method") -> list[str]:
        """Problems this record can see alone (the knobs need the registry: ``studio.validation``)."""
        return [] if isinstance(self.name, str) and self.name else [f"{prefix}.name: expected a method name"]

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
        """Set a knob from its text form as YAML reads it; ``studio.validation`` types it by the knob."""
        if key == "name":
            self.name = text.strip()
            return
        self.knobs[key] = parse_value(text)


@dataclass
class DataSpec(_Section):
    """Where the training examples come from and how they become tokens."""

    path: str = _f("presets/data/identity.jsonl",
                   "a .json/.jsonl/.csv/.parquet file, a folder of them, or a hub dataset name")
    format: str = _f("auto", "row format; auto detects it from the columns",
                     choices=("auto", "alpaca", "chat", "sharegpt", "prompt_completion", "text", "preference",
                              "unpaired", "prompts"))
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
    dedup: str = _f("none", "drop duplicate rows before training: exact (same text) or near (MinHash similarity)",
                    choices=("none", "exact", "near"))
    near_threshold: float = _f(0.8, "near duplicates: estimated Jaccard similarity of character 5-grams at "
                               "which a row counts as a copy of an earlier one", min=0.1, max=1.0)
    min_tokens: int | None = _f(None, "drop rows whose text has fewer tokens than this", min=1)
    max_tokens: int | None = _f(None, "drop rows whose text has more tokens than this", min=1)
    language: str | None = _f(None, "keep only rows in this language (an ISO 639-1 code such as en, detected "
                              "by py3langid); none: keep every language")
    task: str | None = _f(None, "a task tag for this data's rows, put before each prompt as [tag] so one adapter "
                          "can learn several tasks apart; none: no tag")
    mix: list = _f(None, "more sources mixed in by share of training tokens: a list of {path, weight, task, "
                   "format}; data.path gets what their weights (and replay_share) leave", factory=list)
    replay_path: str = _f("presets/data/assistant_chat.jsonl", "general data replayed against forgetting "
                          "(shipped: presets/data/assistant_chat.jsonl, general chat answers)")
    replay_share: float = _f(0.0, "share of training tokens taken from data.replay_path (0: no replay)",
                             min=0.0, max=0.9)

    def problems(self, prefix: str = "data") -> list[str]:
        return super().problems(prefix) + mix_problems(self, prefix)

    def mix_weights(self) -> list[float]:
        """The token shares of the mixed-in sources (mix entries, then replay when on)."""
        shares = [float(m.get("weight", 0)) for m in self.mix if isinstance(m, dict)]
        return shares + ([self.replay_share] if self.replay_share else [])


_MIX_KEYS = ("path", "weight", "task", "format")


def mix_problems(spec: DataSpec, prefix: str = "data") -> list[str]:
    """One line per bad mix entry, and one when the shares leave data.path nothing (they must sum below 1)."""
    if not isinstance(spec.mix, list):
        return []  # the field's own type check already said so
    out = []
    for i, entry in enumerate(spec.mix, 1):
        key = f"{prefix}.mix[{i}]"
        if not isinstance(entry, dict):
            out.append(f"{key}: expected a mapping {{path, weight, task}}, got {entry!r}")
            continue
        unknown = sorted(set(entry) - set(_MIX_KEYS))
        if unknown:
            out.append(f"{key}.{unknown[0]}: unknown key (allowed: {', '.join(_MIX_KEYS)})")
        if not isinstance(entry.get("path"), str) or not entry.get("path", "").strip():
            out.append(f"{key}.path: expected a file, folder or hub dataset name")
        weight = entry.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < 1:
            out.append(f"{key}.weight: expected a share of the training tokens between 0 and 1, got {weight!r}")
    if not out:
        taken = sum(spec.mix_weights())
        if taken >= 0.999:
            parts = " + ".join(f"{w:g}" for w in spec.mix_weights())
            out.append(f"{prefix}.mix: the shares of the mixed-in sources sum to {taken:g} ({parts}), leaving "
                       f"{prefix}.path no tokens; they must sum below 1 (e.g. 0.3 + 0.2 leaves 0.5)")
    return out


class ObjectiveSpec(_Section):
    """The training objective and its knobs: a plain record. The objective registry (studio.objectives) declares
    each objective's knobs, defaults and ranges; ``studio.validation`` checks a spec against it.

    YAML takes ``objective: dpo`` or ``objective: {name: dpo, beta: 0.1}``; ``--set train.objective=dpo`` and
    ``--set train.objective.beta=0.2`` both work.
    """

    def __init__(self, name: str = "sft", knobs: dict | None = None):
        self.name = name
        self.knobs = dict(knobs or {})

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectiveSpec) and (self.name, self.knobs) == (other.name, other.knobs)

    def __repr__(self) -> str:
        return f"ObjectiveSpec({self.name!r}, {self.knobs!r})"

    def problems(self, prefix: str = "train.objective") -> list[str]:
        """Problems this record can see alone (the knobs need the registry: ``studio.validation``)."""
        return [] if isinstance(self.name, str) and self.name else [f"{prefix}.name: expected an objective name"]

    def to_dict(self) -> dict:
        return {"name": self.name, **self.knobs}

    @classmethod
    def from_dict(cls, data, prefix: str = "train.objective") -> "ObjectiveSpec":
        if data is None:
            return cls()
        if isinstance(data, str):
            return cls(data.strip())
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix}: expected an objective name or a mapping, got {data!r}")
        data = dict(data)
        name = data.pop("name", "sft")
        if not isinstance(name, str):
            raise ConfigError(f"{prefix}.name: expected an objective name, got {name!r}")
        return cls(name, data)

    def set(self, key: str, text: str, prefix: str = "train.objective") -> None:
        """Set the name (``key`` '' or 'name') or a knob from its text form; validation types the knob."""
        if key in ("", "name"):
            self.name = text.strip()
            return
        self.knobs[key] = parse_value(text)


@dataclass
class DistributedSpec(_Section):
    """How the run spreads over several GPUs (through accelerate)."""

    strategy: str = _f("none", "none: one process; ddp copies the model; fsdp and zero3 shard it; zero2 shards optimizer state",
                       choices=("none", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"))
    offload: bool = _f(False, "offload parameters/optimizer state to CPU memory (FSDP / DeepSpeed): less VRAM, slower")
    mixed_precision: str = _f("bf16", "mixed precision accelerate uses", choices=("no", "bf16", "fp16"))


NOTHING_TO_TRAIN = "train.epochs is 0 and train.max_steps is not set: nothing to train"


IN_BACKWARD_OPTIMIZERS = ("adamw", "adamw_fused", "sgd")
"""The optimizers train.optimizer_in_backward can run one tensor at a time."""


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
                        "step, no step temporaries); 8-bit, paged and lion variants need bitsandbytes; adafactor "
                        "keeps factored second moments only (least state)",
                        choices=("adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd",
                                 "adafactor", "lion", "lion_8bit"))
    optimizer_in_backward: bool = _f(False, "step each trained tensor as soon as its gradient is made and free "
                                     "that gradient (torchtune's optimizer-in-backward): full fine-tuning holds one "
                                     "tensor's gradient at a time instead of all; needs grad_accum 1, "
                                     "max_grad_norm 0, adamw, adamw_fused or sgd, and an sft run")
    loraplus_ratio: float = _f(0.0, "LoRA+: B matrices learn this many times faster than A (Hayou et al. 2024 "
                               "suggest 16); 0: off. LoRA-family methods only", min=0.0, max=1000.0)
    neftune_alpha: float = _f(0.0, "NEFTune: uniform noise of this scale on the input embeddings while training "
                              "(Jain et al. 2023 use 5); 0: off", min=0.0, max=100.0)
    gradient_checkpointing: bool = _f(False, "recompute activations in backward: much less memory, ~30% slower")
    compile: bool = _f(False, "torch.compile the model for training (inductor): fused kernels, the same loss; the "
                       "first steps of each new row length wait for the compiler, so it pays on long runs only")
    loss_chunk_tokens: int = _f(0, "make the loss's logits this many loss tokens at a time, never the whole "
                                "batch x seq x vocab in fp32: much less memory at long sequences, same loss "
                                "(0: all at once)", min=0, max=65_536)
    precision: str = _f("auto", "auto: bf16 on GPUs and CPUs that have it, else fp32",
                        choices=("auto", "bf16", "fp16", "fp32"))
    seed: int = _f(42, "random seed for weights init, shuffling and dropout")
    logging_steps: int = _f(1, "log every N steps", min=1)
    eval_steps: int | None = _f(None, "evaluate every N steps (needs a validation split)", min=1)
    save_steps: int | None = _f(None, "checkpoint every N steps (for resume)", min=1)
    kl_to_base: float = _f(0.0, "strength of a loss term keeping the tuned next-token distribution near the base's "
                           "(KL to the adapter-off model on the same batch; 0: off; adapter methods only)", min=0.0,
                           max=100.0)
    ewc: float = _f(0.0, "EWC strength: a loss term pulling the trained weights back to their start, each weight "
                    "by its importance on general rows (data.replay_path; Kirkpatrick et al. 2017); any method, the "
                    "one guard for methods that train the base weights (full, freeze, bitfit); 0: off", min=0.0,
                    max=1e9)
    early_stopping_patience: int = _f(0, "stop after N evaluations without a better eval loss (0: off)", min=0)
    keep_best: bool = _f(False, "keep the checkpoint with the lowest eval loss as the run's result instead of the "
                         "last step (needs held-out rows; a checkpoint is then saved at every evaluation)")
    report_to: str = _f("none", "also log to this tracker, inside the run folder (its package is an optional extra)",
                        choices=("none", "tensorboard", "mlflow", "trackio", "wandb"))
    sample_hardware: bool = _f(True, "sample GPU (or CPU and RAM) use at most once a second into hardware.jsonl")
    output_dir: str = _f("runs", "folder that holds the run folders")
    run_name: str | None = _f(None, "name of the run folder; none picks one from the method and the time")
    eval_after: list = _f(None, "after training, score base and tuned and save after_eval.json in the run folder: "
                          "general (shipped general prompts: what tuning cost), studio_mc, studio_gen (benchmarks)",
                          choices=("general", "studio_mc", "studio_gen"), factory=list)
    distributed: DistributedSpec = _f(None, "multi-GPU settings", factory=DistributedSpec)
    objective: ObjectiveSpec = _f(None, "what the run learns: sft (imitate answers) or a preference objective "
                                  "(dpo, orpo, kto, simpo: prefer chosen over rejected answers)",
                                  factory=ObjectiveSpec)
    rewards: list = _f(None, "GRPO's rewards: a list of {kind: match|format|length|contains|excludes|model, "
                       "weight, ...its settings} (studio/rewards.py)", factory=list)

    def problems(self, prefix: str = "train") -> list[str]:
        return super().problems(prefix) + self.in_backward_problems(prefix)

    def in_backward_problems(self, prefix: str = "train") -> list[str]:
        """What optimizer_in_backward cannot go with: each tensor's step runs inside backward, alone."""
        if not self.optimizer_in_backward:
            return []
        key, out = f"{prefix}.optimizer_in_backward", []
        if self.grad_accum > 1:
            out.append(f"{key}: needs grad_accum 1 (each gradient is applied as soon as it is made)")
        if self.max_grad_norm > 0:
            out.append(f"{key}: needs max_grad_norm 0 (clipping needs every gradient at once)")
        if self.optimizer not in IN_BACKWARD_OPTIMIZERS:
            out.append(f"{key}: works with {', '.join(IN_BACKWARD_OPTIMIZERS)}, not {self.optimizer}")
        if self.objective.name != "sft":
            out.append(f"{key}: sft runs only (the {self.objective.name} trainer steps its optimizer itself)")
        return out

    def trains_nothing(self) -> bool:
        """No steps to take: epochs is 0 and max_steps is not set (``NOTHING_TO_TRAIN`` says so)."""
        return not self.max_steps and self.epochs <= 0


_SECTIONS = {"model": ModelSpec, "method": MethodSpec, "data": DataSpec, "train": TrainSpec}


@dataclass
class RunConfig:
    """A whole run: model, method, data and training settings."""

    model: ModelSpec = field(default_factory=ModelSpec)
    method: MethodSpec = field(default_factory=MethodSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    def problems(self) -> list[str]:
        """Every problem with the fields' values, one readable line each (empty when valid).

        A method's knobs need the registry: ``studio.validation.problems`` adds them.
        """
        return [p for name in _SECTIONS for p in getattr(self, name).problems(name)]

    def validate(self) -> "RunConfig":
        """Raise ConfigError listing every field problem at once; return self when valid."""
        found = self.problems()
        if found:
            raise ConfigError(found)
        return self

    def to_dict(self) -> dict:
        return {name: getattr(self, name).to_dict() for name in _SECTIONS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def parse(cls, data: dict | None) -> "RunConfig":
        """Build from a mapping without checking values (unknown sections and keys are still errors)."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"a run config is a mapping with sections {', '.join(_SECTIONS)}, "
                              f"got {type(data).__name__}")
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ConfigError([f"{k}: unknown section (allowed: {', '.join(_SECTIONS)})" for k in unknown])
        return cls(**{k: _SECTIONS[k].from_dict(data.get(k), k) for k in _SECTIONS})

    @classmethod
    def from_dict(cls, data: dict | None) -> "RunConfig":
        """Build from a mapping and check every field (ConfigError with every problem)."""
        return cls.parse(data).validate()

    @classmethod
    def parse_yaml(cls, text: str, source: str = "config") -> "RunConfig":
        """Build from YAML text without checking values; ``source`` names it in messages."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{source}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
        return cls.parse(data)

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> "RunConfig":
        """Build from YAML text and check every field."""
        return cls.parse_yaml(text, source).validate()

    @staticmethod
    def read(path: str | Path) -> str:
        """The text of a YAML file, or a ConfigError naming the missing file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such preset file")
        return path.read_text(encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """A RunConfig from a YAML file, its fields checked (a run folder's config.yaml, a preset)."""
        return cls.from_yaml(cls.read(path), str(path))

    def save(self, path: str | Path) -> Path:
        """Write the config as YAML atomically (a temporary name, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_yaml(), encoding="utf-8")
        tmp.replace(path)
        return path

    def apply_overrides(self, assignments: list[str]) -> tuple["RunConfig", list[str]]:
        """A copy with ``section.key=value`` assignments applied, and every field problem found."""
        cfg = RunConfig.parse(self.to_dict())
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
        return cfg, found

    def with_overrides(self, assignments: list[str]) -> "RunConfig":
        """A copy with ``section.key=value`` assignments applied and its fields checked (ConfigError if bad).

        Method knobs stay as YAML reads them; ``studio.validation.with_overrides`` also types and checks them.
        """
        cfg, found = self.apply_overrides(assignments)
        if found:
            raise ConfigError(found)
        return cfg
