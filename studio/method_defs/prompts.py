"""Prompt-learning methods through PEFT: prefix tuning (deep prompts, as in P-Tuning v2), prompt tuning
(soft prompt at the input) and P-tuning (a small encoder generates the soft prompt).

None of them can merge: they add virtual tokens in front of every input instead of changing weights.
"""

from __future__ import annotations

import torch

from studio.config import ConfigError
from studio.method_defs.peft_common import PEFT_STORAGE, prepare, wrap
from studio.method_api import Knob, MemoryFacts, Method, register

_TOKENS = Knob("num_virtual_tokens", int, 20, "length of the learned prompt, in tokens (each costs context)",
               min=1, max=512, step=1)
_REFUSAL = "prompt-learning methods add virtual tokens in front of the input; there are no weights to fold in"
# Each changes the forward's inputs or attention cache: preflight's trial forward learns whether the model takes it.
_COMMON = dict(family="peft", can_merge=False, merge_refusal=_REFUSAL, mixed_ok=False, trial_forward=True,
               **PEFT_STORAGE)


def _hidden(size: int, token_dim: int) -> int:
    return size or token_dim  # 0 means "the model's token size", as PEFT defaults it


# --- prefix tuning -------------------------------------------------------------------------------------------

PREFIX_KNOBS = (
    _TOKENS,
    Knob("prefix_projection", bool, False, "reparameterise the prefix through a 2-layer MLP (stabler, more to train)"),
    Knob("encoder_hidden_size", int, 0, "hidden size of that MLP (0: the model's key/value size)",
         min=0, max=16384, step=64),
)


def _apply_prefix(model, spec, ctx):
    from peft import PrefixTuningConfig

    v = PREFIX.values(spec)
    model = prepare(model, ctx)
    config = PrefixTuningConfig(num_virtual_tokens=v["num_virtual_tokens"], prefix_projection=v["prefix_projection"],
                                encoder_hidden_size=v["encoder_hidden_size"] or None, task_type="CAUSAL_LM")
    return wrap(model, config)


def _trainable_prefix(arch, spec) -> int:
    v = PREFIX.values(spec)
    n, kv = v["num_virtual_tokens"], arch.num_kv_heads * arch.head_dim  # one key and one value per layer
    out = arch.num_layers * 2 * kv
    if not v["prefix_projection"]:
        return n * out
    e = _hidden(v["encoder_hidden_size"], kv)
    return n * kv + (kv * e + e) + (e * out + out)


def _prefix_refusal(kind: str, peft_config, why: str) -> str:
    heads = peft_config.num_attention_heads
    return (f"prefix tuning does not fit {kind}'s attention cache: PEFT sizes the prefix for {heads} key/value "
            f"heads of {peft_config.token_dim // heads} dims, and a trial forward pass (no weights) fails ({why}); "
            "pick LoRA or prompt tuning instead")


PREFIX = register(Method(
    name="prefix", title="Prefix tuning", summary="learned keys and values in front of every layer (P-Tuning v2)",
    knobs=PREFIX_KNOBS, apply=_apply_prefix, trainable=_trainable_prefix, learning_rate=1e-2,
    memory=MemoryFacts(virtual_tokens="kv"),  # the prefix joins the attention cache: inputs stay as long
    trial_refusal=_prefix_refusal,
    checkpointing_refusal=("prefix tuning cannot run with it (PEFT keeps the prefix in the attention cache, which "
                           "checkpointing turns off); set it to false or pick another method"),
    **_COMMON,
))


# --- prompt tuning -------------------------------------------------------------------------------------------

PROMPT_KNOBS = (
    _TOKENS,
    Knob("init", str, "vocab", "start from random vocabulary embeddings, plain random values, or a text you type",
         choices=("vocab", "random", "text")),
    Knob("init_text", str, "", "the text the prompt starts from when init is text (repeated to fill the tokens)"),
)


def _apply_prompt(model, spec, ctx):
    from peft import PromptTuningConfig, PromptTuningInit

    v = PROMPT.values(spec)
    if v["init"] == "text" and not (v["init_text"].strip() and ctx.tokenizer is not None):
        raise ConfigError("prompt: init text needs method.init_text and the model's tokenizer")
    init = PromptTuningInit.SAMPLE_VOCAB if v["init"] == "vocab" else PromptTuningInit.RANDOM
    model = prepare(model, ctx)
    peft_model = wrap(model, PromptTuningConfig(num_virtual_tokens=v["num_virtual_tokens"],
                                                prompt_tuning_init=init, task_type="CAUSAL_LM"))
    if v["init"] == "text":
        _init_from_text(peft_model, ctx.tokenizer, v["init_text"], v["num_virtual_tokens"])
    return peft_model


def _prompt_checks(v: dict) -> list[str]:
    if v["init"] == "text" and not v["init_text"].strip():
        return ["init_text: empty, but init is text; type the text the prompt starts from, or pick init vocab"]
    return []


def _init_from_text(model, tokenizer, text: str, n: int) -> None:
    # done here rather than by PEFT, which would load the tokenizer again by name (and offline, cannot)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = (ids * (n // max(len(ids), 1) + 1))[:n]
    embed = model.get_base_model().get_input_embeddings()
    table = model.prompt_encoder[model.active_adapter].embedding.weight
    with torch.no_grad():
        table.copy_(embed(torch.tensor(ids, device=embed.weight.device)).to(table.dtype))


PROMPT = register(Method(
    name="prompt", title="Prompt tuning", summary="a learned soft prompt at the input: the smallest result of all",
    knobs=PROMPT_KNOBS, apply=_apply_prompt, learning_rate=3e-2, checks=_prompt_checks,
    trainable=lambda arch, spec: PROMPT.values(spec)["num_virtual_tokens"] * arch.hidden_size, **_COMMON,
))


# --- P-tuning ------------------------------------------------------------------------------------------------

PTUNING_KNOBS = (
    _TOKENS,
    Knob("encoder", str, "MLP", "network that generates the prompt: MLP (recommended) or a bidirectional LSTM",
         choices=("MLP", "LSTM")),
    Knob("encoder_hidden_size", int, 0, "hidden size of the encoder (0: the model's hidden size)",
         min=0, max=16384, step=64),
    Knob("encoder_layers", int, 2, "LSTM layers (the MLP always has two hidden layers)", min=1, max=8, step=1),
)


def _apply_ptuning(model, spec, ctx):
    from peft import PromptEncoderConfig

    v = PTUNING.values(spec)
    model = prepare(model, ctx)
    config = PromptEncoderConfig(num_virtual_tokens=v["num_virtual_tokens"],
                                 encoder_reparameterization_type=v["encoder"],
                                 encoder_hidden_size=v["encoder_hidden_size"] or None,
                                 encoder_num_layers=v["encoder_layers"], task_type="CAUSAL_LM")
    return wrap(model, config)


def _trainable_ptuning(arch, spec) -> int:
    v = PTUNING.values(spec)
    d, h = arch.hidden_size, _hidden(v["encoder_hidden_size"], arch.hidden_size)
    n = v["num_virtual_tokens"] * d
    if v["encoder"] == "MLP":
        return n + (d * h + h) + (h * h + h) + (h * d + d)
    lstm = 0
    for layer in range(v["encoder_layers"]):
        inp = d if layer == 0 else 2 * h
        lstm += 2 * (4 * h * inp + 4 * h * h + 8 * h)  # two directions, input and recurrent weights, two biases
    return n + lstm + (2 * h * 2 * h + 2 * h) + (2 * h * d + d)


PTUNING = register(Method(
    name="ptuning", title="P-tuning", summary="a small MLP or LSTM generates the soft prompt (Liu et al. 2021)",
    knobs=PTUNING_KNOBS, apply=_apply_ptuning, trainable=_trainable_ptuning, learning_rate=1e-3, **_COMMON,
))
