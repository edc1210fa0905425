"""AdaLoRA (Zhang et al. 2023): LoRA in SVD form whose rank budget moves to the layers that matter.

Its schedule is tied to the run's length: ranks stay at ``init_r`` for the first ``tinit`` of the
steps, shrink towards ``target_r`` on average, and stay fixed for the last ``tfinal``. The budget is
reallocated from the gradients after every optimizer step, so the trainer must run this method's
``on_step`` hook (``methods.trainer_callbacks`` does it for the HF Trainer).
"""

from __future__ import annotations

from studio import targets as tg
from studio.config import ConfigError
from studio.method_defs.peft_common import MERGEABLE, PEFT_STORAGE, prepare, wrap
from studio.method_defs.lora import resolve_targets
from studio.method_api import Knob, Method, register

KNOBS = (
    Knob("init_r", int, 12, "starting rank of every adapted layer", min=1, max=1024, step=1),
    Knob("target_r", int, 8, "average rank left after pruning", min=1, max=1024, step=1),
    Knob("tinit", float, 0.1, "fraction of the run's steps before ranks start to shrink", min=0.0, max=0.9, step=0.05),
    Knob("tfinal", float, 0.2, "fraction of the run's steps at the end with ranks fixed", min=0.0, max=0.9, step=0.05),
    Knob("delta_t", int, 10, "steps between two rank reallocations", min=1, max=10000, step=1),
    Knob("alpha", float, 32.0, "scale of the update", min=0.0, max=4096.0),
    Knob("dropout", float, 0.0, "dropout on the adapter input", min=0.0, max=0.9, step=0.01),
    Knob("targets", list, ["all-linear"], "layers to adapt: names or attention / mlp / all-linear", picks="layers"),
    Knob("orth_reg_weight", float, 0.5, "weight of the loss term keeping P and Q orthogonal", min=0.0, max=10.0),
)


def schedule(values: dict, total_steps: int | None) -> dict:
    """Step numbers (tinit, tfinal, deltaT, total_step) for PEFT from the knobs' fractions."""
    if not total_steps:
        raise ConfigError("adalora: its rank schedule needs the run's total number of steps (none was given)")
    problems = checks(values)
    if problems:
        raise ConfigError([f"method.{p}" for p in problems])
    tinit, tfinal = int(values["tinit"] * total_steps), int(values["tfinal"] * total_steps)
    if tinit >= total_steps - tfinal:  # very short runs
        tinit, tfinal = 0, 0
    return {"tinit": tinit, "tfinal": tfinal, "deltaT": values["delta_t"], "total_step": total_steps}


def checks(values: dict) -> list[str]:
    """Knobs that do not go together: the schedule needs a pruning phase, and ranks only shrink."""
    out = []
    if values["tinit"] + values["tfinal"] >= 1.0:
        out.append(f"tfinal: tinit + tfinal is {values['tinit'] + values['tfinal']:g}; it must stay below 1 "
                   "(the pruning phase needs steps)")
    if values["target_r"] > values["init_r"]:
        out.append(f"target_r: {values['target_r']} is above init_r {values['init_r']}; AdaLoRA only prunes ranks")
    return out


def _apply(model, spec, ctx):
    from peft import AdaLoraConfig

    v = ADALORA.values(spec)
    model = prepare(model, ctx)
    config = AdaLoraConfig(init_r=v["init_r"], target_r=v["target_r"], lora_alpha=v["alpha"],
                           lora_dropout=v["dropout"], target_modules=resolve_targets(model, v["targets"]),
                           orth_reg_weight=v["orth_reg_weight"], task_type="CAUSAL_LM",
                           **schedule(v, ctx.total_steps))
    return wrap(model, config)


def _on_step(model, global_step: int) -> None:
    model.base_model.update_and_allocate(global_step)


def _trainable(arch, spec) -> int:
    v = ADALORA.values(spec)
    shapes = tg.linear_shapes(arch)
    names = [n for n in tg.expand(v["targets"], tg.for_arch(arch)) if n in shapes]
    # P (r x in), Q (out x r) and the singular values E (r): the mask prunes E, the tensors keep their size
    return arch.num_layers * sum(v["init_r"] * (shapes[n][0] + shapes[n][1] + 1) for n in names)


ADALORA = register(Method(
    name="adalora", title="AdaLoRA", summary="LoRA whose rank budget moves to the layers that need it during training",
    knobs=KNOBS, apply=_apply, trainable=_trainable, family="lora", rank_knob="init_r", learning_rate=5e-4,
    step_hook=_on_step, checks=checks, mixed_ok=False, **MERGEABLE, **PEFT_STORAGE,
    # TRL keeps the reference as a second, frozen adapter beside the trained one; AdaLoRA allows only one
    reference_refusal="AdaLoRA holds one adapter only, and the reference is a second one; use lora, or an "
                      "objective without a reference (orpo, simpo)",
))
