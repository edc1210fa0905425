"""The training objectives, one entry each: supervised fine-tuning and four preference objectives through TRL.

TRL is imported when a trainer is built (not when the registry loads), so the CLI and the UI start fast.
Paper references: DPO (Rafailov et al. 2023), ORPO (Hong et al. 2024), KTO (Ethayarajh et al. 2024),
SimPO (Meng et al. 2024, trained through TRL's CPO trainer with ``loss_type='simpo'`` and ``cpo_alpha=0``).
"""

from __future__ import annotations

from studio.config import Setting
from studio.objective_api import Objective, register

__all__ = ["SFT", "DPO", "ORPO", "KTO", "SIMPO", "GRPO"]


def _dpo_trainer():
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer, DPOConfig


def _orpo_trainer():
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ORPOTrainer, ORPOConfig


def _kto_trainer():
    from trl import KTOConfig, KTOTrainer

    return KTOTrainer, KTOConfig


def _cpo_trainer():
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    return CPOTrainer, CPOConfig


def _dpo_checks(values: dict) -> list[str]:
    if values["loss_type"] == "robust" and not values["label_smoothing"] < 0.5:
        return ["label_smoothing: the robust loss needs label_smoothing below 0.5"]
    return []


_BETA_DPO = Setting("beta", float, 0.1, "how far the tuned model may move from the reference: lower lets it drift "
                    "further (0.1 is the paper's default)", min=0.001, max=10.0, step=0.01)

SFT = register(Objective(
    name="sft", title="Supervised (SFT)",
    summary="imitate the answers in chat / instruction data; the start of every other objective",
))

DPO = register(Objective(
    name="dpo", title="DPO",
    summary="prefer the chosen answer over the rejected one, measured against a frozen reference model",
    knobs=(
        _BETA_DPO,
        Setting("loss_type", str, "sigmoid", "sigmoid: the paper's loss; hinge: SLiC; ipo: regularised for "
                "noisy pairs; robust: for labels that are sometimes flipped", choices=("sigmoid", "hinge", "ipo", "robust")),
        Setting("label_smoothing", float, 0.0, "assumed share of flipped labels (conservative DPO); 0 trusts every "
                "pair", min=0.0, max=0.5, step=0.01),
    ),
    data="paired", sequences_per_row=2, reference=True, trainer=_dpo_trainer, fused_head=True,
    trainer_args=lambda v: {"beta": v["beta"], "loss_type": [v["loss_type"]], "label_smoothing": v["label_smoothing"]},
    checks=_dpo_checks,
))

ORPO = register(Objective(
    name="orpo", title="ORPO",
    summary="SFT on the chosen answer plus an odds-ratio penalty on the rejected one; no reference model",
    knobs=(Setting("beta", float, 0.1, "lambda in the paper: weight of the odds-ratio term against the SFT loss",
                   min=0.001, max=10.0, step=0.01),),
    data="paired", sequences_per_row=2, reference=False, trainer=_orpo_trainer,
    trainer_args=lambda v: {"beta": v["beta"]},
))

KTO = register(Objective(
    name="kto", title="KTO",
    summary="learn from answers marked good or bad one at a time (no pairs needed), against a reference model",
    knobs=(
        _BETA_DPO,
        Setting("desirable_weight", float, 1.0, "weight of the good answers' loss; raise it when they are the "
                "fewer (the paper keeps weight x count within 1 to 4/3 of the other side)", min=0.01, max=10.0,
                step=0.05),
        Setting("undesirable_weight", float, 1.0, "weight of the bad answers' loss", min=0.01, max=10.0, step=0.05),
    ),
    data="unpaired", sequences_per_row=1, reference=True, trainer=_kto_trainer, min_micro_batch=2, fused_head=True,
    trainer_args=lambda v: {"beta": v["beta"], "desirable_weight": v["desirable_weight"],
                            "undesirable_weight": v["undesirable_weight"]},
))

SIMPO = register(Objective(
    name="simpo", title="SimPO",
    summary="prefer the chosen answer by its length-normalised likelihood, with a target margin; no reference",
    knobs=(
        Setting("beta", float, 2.0, "scale of the length-normalised reward (the paper uses 2 to 2.5)",
                min=0.01, max=20.0, step=0.1),
        Setting("gamma", float, 0.5, "target margin between chosen and rejected rewards", min=0.0, max=10.0,
                step=0.1),
    ),
    data="paired", sequences_per_row=2, reference=False, trainer=_cpo_trainer,
    trainer_args=lambda v: {"beta": v["beta"], "simpo_gamma": v["gamma"], "loss_type": "simpo", "cpo_alpha": 0.0},
))


def _grpo_trainer():
    from trl import GRPOConfig, GRPOTrainer

    return GRPOTrainer, GRPOConfig


def _grpo_levers(values: dict) -> list:
    out = []
    if values["num_generations"] > 2:
        n = max(2, values["num_generations"] // 2)
        out.append((f"{n} answers per prompt (a noisier baseline per group)", {"train.objective.num_generations": n}))
    if values["max_completion_length"] > 16:
        n = values["max_completion_length"] // 2
        out.append((f"answers of at most {n} tokens (longer ones are cut)",
                    {"train.objective.max_completion_length": n}))
    return out


GRPO = register(Objective(
    name="grpo", title="GRPO (rewards)",
    summary="the model writes several answers per prompt, train.rewards scores them, and the answers that beat "
            "their group's mean are reinforced (TRL's GRPOTrainer)",
    knobs=(
        Setting("num_generations", int, 4, "answers written per prompt; more gives a steadier baseline and costs "
                "memory and time in proportion (train.micro_batch_size x grad_accum must be a multiple)",
                min=2, max=256, step=1),
        Setting("max_completion_length", int, 64, "the longest answer in tokens; longer ones are cut",
                min=1, max=32768, step=1),
        Setting("temperature", float, 1.0, "sampling temperature: higher gives more varied answers to compare",
                min=0.05, max=4.0, step=0.05),
        Setting("beta", float, 0.0, "KL penalty towards the starting model: 0 needs no reference pass (TRL's "
                "default); 0.001-0.04 keeps the model closer (PEFT methods only)", min=0.0, max=10.0, step=0.001),
        Setting("loss_type", str, "dapo", "dapo: token-level, no length bias (TRL's default); grpo: the paper's "
                "per-answer mean; dr_grpo: a constant normaliser; bnpo: local batch; cispo and sapo: softer "
                "clipping", choices=("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo")),
    ),
    data="prompts", trainer=_grpo_trainer, online=True, fused_head=True,
    trainer_args=lambda v: {"num_generations": v["num_generations"],
                            "max_completion_length": v["max_completion_length"],
                            "temperature": v["temperature"], "beta": v["beta"], "loss_type": v["loss_type"]},
    generation=lambda v: {"answers": v["num_generations"], "answer_tokens": v["max_completion_length"]},
    memory_levers=_grpo_levers,
))
