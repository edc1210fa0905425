"""LoRA and its variants (rsLoRA, DoRA) through PEFT: low-rank updates beside chosen linear layers."""

from __future__ import annotations

from studio import targets as tg
from studio.methods import Knob, Method, register

TARGET_CHOICES = None  # names come from the model; groups 'attention', 'mlp', 'all-linear' are allowed too

LORA_KNOBS = (
    Knob("r", int, 8, "rank of the update: capacity and adapter size grow with it", min=1, max=1024, step=1),
    Knob("alpha", float, 16.0, "scale of the update (alpha / r, or alpha / sqrt(r) with rsLoRA)", min=0.0, max=4096.0),
    Knob("dropout", float, 0.0, "dropout on the adapter input", min=0.0, max=0.9, step=0.01),
    Knob("targets", list, ["attention"], "layers to adapt: names (q_proj, c_attn...) or attention / mlp / all-linear"),
    Knob("bias", str, "none", "also train biases: none, all, or only those of adapted layers",
         choices=("none", "all", "lora_only")),
    Knob("use_rslora", bool, False, "scale by alpha / sqrt(r): stable at high rank (Kalajdzievski 2023)"),
    Knob("use_dora", bool, False, "split weights into magnitude and direction (DoRA, Liu et al. 2024); slower"),
)


def resolve_targets(model, wanted: list[str]) -> list[str]:
    """Module names for PEFT, groups expanded from what the model really has."""
    return tg.expand(wanted, tg.discover(model))


def lora_config(model, values: dict, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(r=values["r"], lora_alpha=values["alpha"], lora_dropout=values["dropout"],
                      target_modules=resolve_targets(model, values["targets"]), bias=values["bias"],
                      use_rslora=values["use_rslora"], use_dora=values["use_dora"], task_type=task_type)


def _apply(model, spec, ctx):
    from peft import get_peft_model

    values = LORA.values(spec)
    return get_peft_model(model, lora_config(model, values))


def linear_shapes(arch, wanted: list[str]) -> list[tuple[int, int]]:
    """(in, out) features of every adapted layer in the whole model, from the architecture alone."""
    h, q = arch.hidden_size, arch.num_heads * arch.head_dim
    kv, ff = arch.num_kv_heads * arch.head_dim, arch.intermediate_size
    shapes = {
        "q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
        "gate_proj": (h, ff), "up_proj": (h, ff), "down_proj": (ff, h),
        "c_attn": (h, q + 2 * kv), "attn.c_proj": (q, h), "c_fc": (h, ff), "mlp.c_proj": (ff, h),
    }
    names = tg.expand(wanted, tg.for_arch(arch.model_type))
    return [shapes[n] for n in names if n in shapes] * arch.num_layers


def _trainable(arch, spec) -> int:
    v = LORA.values(spec)
    shapes = linear_shapes(arch, v["targets"])
    n = sum(v["r"] * (i + o) for i, o in shapes)
    if v["use_dora"]:
        n += sum(o for _, o in shapes)  # one magnitude per output feature
    return n


LORA = register(Method(
    name="lora", title="LoRA", summary="low-rank updates beside chosen layers; small, fast, mergeable",
    knobs=LORA_KNOBS, apply=_apply, trainable=_trainable, family="lora", can_merge=True, learning_rate=2e-4,
))
