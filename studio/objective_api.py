"""The objective API: what a training objective is (``Objective`` and its knobs) and the registry it joins.

An objective says what the run learns, independently of the method that decides which weights train:
``sft`` imitates answers; ``dpo``, ``orpo``, ``kto`` and ``simpo`` learn to prefer a chosen answer over a
rejected one through TRL's trainers. Each is one ``Objective`` entry (``studio/objective_defs.py``); the
data loader, the trainer, the memory estimate, preflight and the UI ask the entry, never its name.

    obj = get("dpo")
    obj.values(cfg.train.objective)        # every knob's value, its own where set, else the default
    obj.trainer_args(values)               # the TRL config fields its knobs set
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from studio.config import ConfigError, ObjectiveSpec, Setting, find_setting, knob_problems

__all__ = ["Objective", "register", "get", "names", "all_objectives", "check_spec"]


@dataclass(frozen=True)
class Objective:
    """A training objective.

    Attributes:
        data: the rows it trains on: 'sft' (chat / text rows), 'paired' ({prompt, chosen, rejected}) or
            'unpaired' ({prompt, completion, label}; paired rows are split into one good and one bad row).
        sequences_per_row: sequences one data row puts through the model per step (2 for paired objectives:
            chosen and rejected), which the memory estimate multiplies the activations by.
        reference: whether it compares against a frozen reference model (a second forward pass without
            gradients). PEFT methods get it from the same weights (TRL switches the adapter off, or keeps a
            frozen copy of a started adapter); methods that change the weights keep a reference copy.
        trainer: ``() -> (TrainerClass, ConfigClass)`` from TRL; None for sft (the studio's own Trainer).
        trainer_args: knob values -> keyword arguments of the TRL config class.
        checks: knob values -> problems with how they combine.
        min_micro_batch: the fewest rows per forward pass it works with (preflight refuses fewer).
        online: it writes its own answers while it trains (GRPO): the data are prompts, rewards score the
            answers, and ``train.micro_batch_size`` counts answers per forward pass.
        generation: knob values -> {'answers': answers per prompt, 'answer_tokens': the longest answer}, for
            the step count and the memory estimate of an online objective.
        memory_levers: knob values -> [(what to do, {setting: value})], single changes of its own knobs
            that lower memory, offered by the fit verdict.
        fused_head: its TRL trainer computes log-probabilities through TRL's chunked LM head instead of
            whole logits (DPO, KTO, GRPO), which the memory estimate counts instead (losses.trl_logprob_bytes).
    """

    name: str
    title: str
    summary: str
    knobs: tuple[Setting, ...] = ()
    data: str = "sft"
    sequences_per_row: int = 1
    reference: bool = False
    trainer: Callable[[], tuple[type, type]] | None = None
    trainer_args: Callable[[dict], dict] = lambda values: {}
    checks: Callable[[dict], list[str]] | None = None
    min_micro_batch: int = 1
    online: bool = False
    generation: Callable[[dict], dict] | None = None
    memory_levers: Callable[[dict], list] | None = None
    fused_head: bool = False

    @property
    def preference(self) -> bool:
        """Whether it learns from preferences (chosen / rejected answers) through a TRL trainer."""
        return self.trainer is not None and not self.online

    def knob(self, name: str, prefix: str = "train.objective") -> Setting:
        """The knob called ``name`` (ConfigError naming the allowed ones)."""
        return find_setting(self.knobs, name, prefix, self.name)

    def defaults(self) -> dict:
        return {k.name: k.default for k in self.knobs}

    def values(self, spec: ObjectiveSpec) -> dict:
        """Every knob's value for ``spec``: its own where set, else the default."""
        return {**self.defaults(), **{k: self.knob(k).coerce(v) for k, v in spec.knobs.items()}}

    def answers_per_row(self, spec: ObjectiveSpec) -> int:
        """Sequences the trainer makes of one data row per epoch: an online objective's answers per prompt."""
        return int(self.generation(self.values(spec))["answers"]) if self.generation else 1

    def memory_terms(self, full_copy: bool, spec: ObjectiveSpec | None = None) -> dict:
        """What the memory estimate adds for this objective.

        Args:
            full_copy: the method changes the base weights (no adapter to switch off), so a reference needs
                its own copy of the weights.

        Returns:
            {'sequences_per_row': n, 'reference_forward': bool, 'reference_weights': bool, 'fused_head': bool},
            and for an online objective 'answer_tokens' (each trained sequence is the prompt plus an answer this long).
        """
        terms = {"sequences_per_row": self.sequences_per_row, "reference_forward": self.reference,
                 "reference_weights": self.reference and full_copy, "fused_head": self.fused_head}
        if self.generation is not None:
            terms["answer_tokens"] = int(self.generation(self.values(spec or ObjectiveSpec(self.name)))["answer_tokens"])
        return terms

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "summary": self.summary, "data": self.data,
                "sequences_per_row": self.sequences_per_row, "reference": self.reference,
                "knobs": [k.to_dict() for k in self.knobs]}


_REGISTRY: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    """Add an objective to the registry (one call per objective)."""
    _REGISTRY[objective.name] = objective
    return objective


def get(name: str) -> Objective:
    """The objective called ``name``, or a ConfigError listing the known ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"train.objective: unknown objective {name!r} (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


def names() -> list[str]:
    return list(_REGISTRY)


def all_objectives() -> list[Objective]:
    return list(_REGISTRY.values())


def check_spec(spec: ObjectiveSpec, prefix: str = "train.objective") -> list[str]:
    """Every problem with an ObjectiveSpec: an unknown name, unknown knobs, values out of range, knobs that clash."""
    try:
        objective = get(spec.name)
    except ConfigError as err:
        return err.problems
    out = knob_problems(objective.knobs, spec.knobs, prefix, objective.name)
    if not out and objective.checks is not None:
        out += [f"{prefix}.{line}" for line in objective.checks(objective.values(spec))]
    return out

