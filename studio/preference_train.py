"""Preference training: the TRL trainer an objective names, built around the studio's model, data and callbacks.

TrainingJob asks the objective entry whether it is a preference objective and, if so, builds its trainer
here instead of the supervised one; everything else (progress, stop, resume, the method's step hook, the
final save) stays the job's. The losses are TRL's own.

The reference model: for PEFT methods TRL keeps no second copy of the weights: a fresh adapter is switched
off to give the base, and an adapter started from a finished run (``model.adapter_from``) gets a frozen copy
of its own small weights (TRL's 'ref' adapter), so the reference is that run. Methods that change the base
weights get a frozen copy of the base (``reference_copy``), which the memory estimate counts.
"""

from __future__ import annotations

import copy
from pathlib import Path

from studio.config import RunConfig
from studio.data import chat_template
from studio.data.preference import Pairs, build
from studio.objective_api import Objective
from studio.train_parts import build_args

__all__ = ["build_data", "needs_reference_copy", "reference_copy", "build_trainer", "drop_reference",
           "REF_ADAPTER"]

REF_ADAPTER = "ref"
"""The name TRL gives the frozen copy of a started adapter (dropped before the result is saved)."""


def build_data(cfg: RunConfig, tokenizer, objective: Objective) -> Pairs:
    """The run's preference rows, checked for ``objective`` (paired objectives refuse unpaired rows)."""
    return build(cfg, tokenizer, paired=objective.data == "paired")


def needs_reference_copy(objective: Objective, method) -> bool:
    """Whether the run keeps a whole frozen copy of the weights: a reference objective on a method without
    PEFT's switchable adapters (full, freeze, bitfit, the studio's bottleneck adapters)."""
    return objective.reference and method.fmt != "peft"


def reference_copy(model):
    """A frozen copy of ``model`` (taken before the method changes it) to serve as the reference."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


_COUNTING: dict[type, type] = {}


def _counting(trainer_cls: type) -> type:
    """``trainer_cls`` with the studio's real-token count (tokens/s on the chart, the run's token total)."""
    if trainer_cls not in _COUNTING:
        def training_step(self, model, inputs, num_items_in_batch=None):
            # every sequence's attention mask counts its real tokens (chosen and rejected both ran)
            self.studio_tokens += sum(int(v.sum()) for k, v in inputs.items()
                                      if k.endswith("attention_mask") and not k.startswith("prompt"))
            return trainer_cls.training_step(self, model, inputs, num_items_in_batch)

        _COUNTING[trainer_cls] = type(f"Studio{trainer_cls.__name__}", (trainer_cls,),
                                      {"studio_tokens": 0, "training_step": training_step})
    return _COUNTING[trainer_cls]


def build_trainer(cfg: RunConfig, objective: Objective, model, tokenizer, pairs: Pairs, *, output_dir: Path,
                  lr: float, total_steps: int, callbacks: list, reference=None):
    """The objective's TRL trainer over ``model`` (already made trainable by the method).

    Args:
        reference: a frozen model copy for methods without switchable adapters; None lets TRL use the adapter.
    """
    from datasets import Dataset

    trainer_cls, config_cls = objective.trainer()
    values = objective.values(cfg.train.objective)
    args = build_args(cfg, output_dir, lr=lr, total_steps=total_steps, has_eval=bool(pairs.eval),
                      args_class=config_cls, max_length=cfg.train.max_seq_len,
                      gradient_checkpointing=cfg.train.gradient_checkpointing, **objective.trainer_args(values))
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template(tokenizer)  # the studio's fallback, as SFT renders rows
    kwargs = dict(model=model, args=args, train_dataset=Dataset.from_list(pairs.train),
                  eval_dataset=Dataset.from_list(pairs.eval) if pairs.eval else None,
                  processing_class=tokenizer, callbacks=callbacks)
    if objective.reference:
        kwargs["ref_model"] = reference
    return _counting(trainer_cls)(**kwargs)


def drop_reference(model) -> None:
    """Remove TRL's frozen 'ref' adapter (if any) so the saved result holds the trained adapter only."""
    if REF_ADAPTER in (getattr(model, "peft_config", None) or {}):
        model.delete_adapter(REF_ADAPTER)
