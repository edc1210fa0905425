"""Full fine-tuning: every weight trains."""

from studio.method_defs.weights_common import WEIGHTS_STORAGE
from studio.method_api import Method, register


def _apply(model, spec, ctx):
    for p in model.parameters():
        p.requires_grad_(True)
    if ctx.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _trainable(arch, spec) -> int:
    return arch.num_parameters


register(Method(
    name="full", title="Full fine-tuning", summary="every weight trains; most memory, most capacity",
    knobs=(), apply=_apply, trainable=_trainable, learning_rate=2e-5,
    merge_refusal="full fine-tuning already changed the weights: there is no adapter to merge",
    **WEIGHTS_STORAGE,
))
