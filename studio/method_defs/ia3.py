"""(IA)^3 (Liu et al. 2022): learned vectors rescale keys, values and the feed-forward activations."""

from __future__ import annotations

from studio import targets as tg
from studio.config import ConfigError
from studio.method_defs.peft_common import MERGEABLE, PEFT_STORAGE, prepare, wrap
from studio.method_defs.lora import resolve_targets
from studio.method_api import Knob, Method, register

KNOBS = (
    Knob("targets", list, ["ia3"], "layers to rescale: names, or ia3 (keys, values, MLP down projection), "
         "attention, mlp, all-linear", picks="layers"),
    Knob("feedforward", list, ["ffn-out"], "targets whose input (not output) is rescaled: names or ffn-out "
         "(the MLP down projection)", picks="layers"),
)


def _feedforward(targets: list[str], wanted: list[str], groups: dict) -> list[str]:
    # PEFT requires the feed-forward modules to be a subset of the targets
    return [n for n in tg.expand(wanted, groups) if n in targets]


def _apply(model, spec, ctx):
    from peft import IA3Config

    v = IA3.values(spec)
    targets = resolve_targets(model, v["targets"])
    ff = _feedforward(targets, v["feedforward"], tg.discover(model))
    if not targets:
        raise ConfigError("ia3: no layers to rescale; set method.targets")
    model = prepare(model, ctx)
    return wrap(model, IA3Config(target_modules=targets, feedforward_modules=ff, task_type="CAUSAL_LM"))


def _trainable(arch, spec) -> int:
    v = IA3.values(spec)
    groups = tg.for_arch(arch)
    shapes = tg.linear_shapes(arch)
    targets = [n for n in tg.expand(v["targets"], groups) if n in shapes]
    ff = set(_feedforward(targets, v["feedforward"], groups))
    # one scale per input feature for feed-forward targets, per output feature for the others
    return arch.num_layers * sum(shapes[n][0] if n in ff else shapes[n][1] for n in targets)


IA3 = register(Method(
    name="ia3", title="(IA)\u00b3", summary="learned vectors rescale keys, values and MLP activations: fewest weights",
    knobs=KNOBS, apply=_apply, trainable=_trainable, family="peft", learning_rate=3e-3,
    mixed_ok=False, **MERGEABLE, **PEFT_STORAGE,
))
