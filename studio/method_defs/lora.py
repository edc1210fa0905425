"""LoRA and its variants through PEFT: plain LoRA (with rsLoRA and DoRA toggles), QLoRA on a 4-bit base,
and LoRA on an 8-bit base. All three save in plain PEFT format and merge into an unquantised base."""

from __future__ import annotations

from studio import targets as tg
from studio.config import ConfigError
from studio.method_api import Knob, Method, get, register
from studio.method_defs import lora_init
from studio.method_defs.peft_common import MERGEABLE, PEFT_STORAGE, prepare, wrap

__all__ = ["LORA_KNOBS", "QLORA_KNOBS", "resolve_targets", "lora_config", "linear_shapes", "lora_trainable"]

TARGET_CHOICES = None  # names come from the model; groups 'attention', 'mlp', 'all-linear' are allowed too

_BASE_KNOBS = (
    Knob("r", int, 8, "rank of the update: capacity and adapter size grow with it", min=1, max=1024, step=1),
    Knob("alpha", float, 16.0, "scale of the update (alpha / r, or alpha / sqrt(r) with rsLoRA)", min=0.0, max=4096.0),
    Knob("dropout", float, 0.0, "dropout on the adapter input", min=0.0, max=0.9, step=0.01),
    Knob("targets", list, ["attention"], "layers to adapt: names (q_proj, c_attn...) or attention / mlp / all-linear", picks="layers"),
    Knob("bias", str, "none", "also train biases: none, all, or only those of adapted layers",
         choices=("none", "all", "lora_only")),
    Knob("use_rslora", bool, False, "scale by alpha / sqrt(r): stable at high rank (Kalajdzievski 2023)"),
    Knob("use_dora", bool, False, "split weights into magnitude and direction (DoRA, Liu et al. 2024); slower"),
)
LORA_KNOBS = _BASE_KNOBS + lora_init.INIT_KNOBS

QLORA_KNOBS = _BASE_KNOBS + lora_init.QLORA_INIT_KNOBS + (
    Knob("quant_type", str, "nf4", "4-bit data type of the frozen base: nf4 (normal-float, the QLoRA paper's) or fp4",
         choices=("nf4", "fp4")),
    Knob("double_quant", bool, True, "quantise the quantisation constants too: ~0.4 bit/param less"),
    Knob("compute_dtype", str, "auto", "dtype the 4-bit layers compute in (auto: bf16 where supported)",
         choices=("auto", "bf16", "fp16", "fp32")),
    Knob("gradient_checkpointing", bool, True, "recompute activations in backward: much less memory, ~30% slower"),
)

KBIT_KNOBS = _BASE_KNOBS + lora_init.KBIT_INIT_KNOBS + (QLORA_KNOBS[-1],)


def resolve_targets(model, wanted: list[str], key: str = "method.targets") -> list[str]:
    """Module names for PEFT, groups expanded from what the model really has (``key`` names the setting)."""
    return tg.resolve_layers(model, wanted, key)


def lora_config(model, values: dict, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(r=values["r"], lora_alpha=values["alpha"], lora_dropout=values["dropout"],
                      target_modules=resolve_targets(model, values["targets"]), bias=values["bias"],
                      use_rslora=values["use_rslora"], use_dora=values["use_dora"], task_type=task_type,
                      **lora_init.peft_init(values))


def linear_shapes(arch, wanted: list[str]) -> list[tuple[int, int]]:
    """(in, out) features of every adapted layer in the whole model, from the architecture alone."""
    shapes = tg.linear_shapes(arch)
    names = tg.expand(wanted, tg.for_arch(arch))
    return [shapes[n][:2] for n in names if n in shapes] * arch.num_layers


def lora_trainable(arch, v: dict) -> int:
    """LoRA A and B (r x in + out x r per layer), DoRA magnitudes, and the biases the bias knob frees."""
    shapes = tg.linear_shapes(arch)
    names = [n for n in tg.expand(v["targets"], tg.for_arch(arch)) if n in shapes]
    per_block = sum(v["r"] * (shapes[n][0] + shapes[n][1]) for n in names)
    if v["use_dora"]:
        per_block += sum(shapes[n][1] for n in names)  # one magnitude per output feature
    if v["bias"] == "lora_only":
        per_block += sum(shapes[n][2] for n in names)
    n = per_block * arch.num_layers
    return n + (tg.bias_total(arch) if v["bias"] == "all" else 0)


def _wrap_lora(model, values: dict, ctx):
    config = lora_config(model, values)
    lora_init.before_wrap(model, config, values, ctx)  # CorDA's data pass comes before the layers exist
    peft_model = wrap(model, config)
    return lora_init.after_wrap(peft_model, values, ctx, getattr(model.config, "name_or_path", None))


def _apply(model, spec, ctx):
    values = LORA.values(spec)
    return _wrap_lora(prepare(model, ctx), values, ctx)


def _apply_kbit(model, spec, ctx):
    values = get(spec.name).values(spec)
    if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
        raise ConfigError(f"{spec.name} needs the base loaded quantised: load it with "
                          "methods.model_spec_for(model_spec, method_spec)")
    model = prepare(model, ctx, checkpointing=values["gradient_checkpointing"], kbit=True)
    return _wrap_lora(model, values, ctx)


def _no_dora(v: dict) -> bool:
    # PEFT refuses adapter_names (mixed base/tuned batches) when DoRA is on
    return not v["use_dora"]


def _four_bit(v: dict) -> dict:
    return {"quantization": v["quant_type"], "double_quant": v["double_quant"], "compute_dtype": v["compute_dtype"]}


def _save(model, spec, folder) -> None:
    # PiSSA / OLoRA / CorDA: a plain LoRA (rank 2r) on the true base, so export and chat see the real base
    if not lora_init.save_converted(model, folder):
        model.save_pretrained(str(folder), safe_serialization=True)


_LORA_COMMON = dict(family="lora", learning_rate=2e-4, rank_knob="r", mixed_ok=_no_dora, **MERGEABLE,
                    **{**PEFT_STORAGE, "save": _save})

LORA = register(Method(
    name="lora", title="LoRA", summary="low-rank updates beside chosen layers; small, fast, mergeable",
    knobs=LORA_KNOBS, apply=_apply, trainable=lambda arch, spec: lora_trainable(arch, LORA.values(spec)),
    **_LORA_COMMON,
))

QLORA = register(Method(
    name="qlora", title="QLoRA", summary="LoRA on a frozen 4-bit (NF4/FP4) base: the least memory for a big model",
    knobs=QLORA_KNOBS, apply=_apply_kbit, trainable=lambda arch, spec: lora_trainable(arch, QLORA.values(spec)),
    quantized="4bit", overrides=_four_bit, machine_refusal=lora_init.machine_refusal, **_LORA_COMMON,
))

LORA8 = register(Method(
    name="lora_8bit", title="LoRA on an 8-bit base", summary="LoRA on a frozen LLM.int8() base: half the base memory",
    knobs=KBIT_KNOBS, apply=_apply_kbit, trainable=lambda arch, spec: lora_trainable(arch, LORA8.values(spec)),
    quantized="8bit", overrides=lambda v: {"quantization": "8bit"}, **_LORA_COMMON,
))
