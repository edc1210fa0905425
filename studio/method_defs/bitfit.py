"""BitFit (Ben Zaken et al. 2022): only the bias terms train, and optionally the norms' scale weights."""

from __future__ import annotations

from studio import targets as tg
from studio.config import ConfigError
from studio.method_defs.weights_common import WEIGHTS_STORAGE, freeze_all
from studio.method_api import Knob, Method, register

KNOBS = (
    Knob("norms", bool, False, "also train the norms' scale weights (needed on models without biases, e.g. Llama)"),
)


def _apply(model, spec, ctx):
    v = BITFIT.values(spec)
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    if not biases and not v["norms"]:
        kind = getattr(model.config, "model_type", "this model")
        raise ConfigError(f"bitfit: {kind} has no bias terms, so BitFit would train nothing; set method.norms: true "
                          "to train its norm weights, or pick another method (lora, ia3)")
    freeze_all(model)
    for p in biases:
        p.requires_grad_(True)
    if v["norms"]:
        for module in model.modules():
            if tg.is_norm(module) and getattr(module, "weight", None) is not None:
                module.weight.requires_grad_(True)
    if ctx.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def _trainable(arch, spec) -> int:
    v = BITFIT.values(spec)
    return tg.bias_total(arch) + (tg.norm_weight_total(arch) if v["norms"] else 0)


BITFIT = register(Method(
    name="bitfit", title="BitFit", summary="only bias terms train (optionally norms): tiny, but weaker on big changes",
    knobs=KNOBS, apply=_apply, trainable=_trainable, learning_rate=1e-3,
    merge_refusal="BitFit changed the biases in place: the tuned model is already a plain model",
    **WEIGHTS_STORAGE,
))
