"""Preflight: the settings a run cannot train with, found before any weights load.

RunConfig checks each value against its range; this module checks what needs the model's config or
this machine: a rank larger than a targeted layer, targets the model does not have, a sequence length
beyond the model's context, quantisation without a working bitsandbytes, a model that is not a causal
language model, a method the model's forward cannot take. Module names and shapes come from a copy of
the model built on the meta device (no memory, no weights); prompt-learning methods get a trial forward
pass there, since only the model's own forward knows whether it takes virtual tokens.

    found = preflight.problems(cfg)     # one readable line per problem; [] when the run can start
    preflight.check(cfg)                # the same, raised as a ConfigError (TrainingJob.start calls it)
"""

from __future__ import annotations

import functools
import threading
import warnings

import torch

from studio import meta_model, methods, models, objectives, start_from, trackers, validation
from studio import targets as tg
from studio.config import NOTHING_TO_TRAIN, ConfigError, RunConfig
from studio.data.preference import PREFERENCE_FORMATS
from studio.hardware import resolve_precision

__all__ = ["problems", "check", "bitsandbytes_problem", "causal_lm_problem", "context_length"]

CAUSAL_ONLY = "the studio trains causal language models only (decoder-only, next-token: Llama, Qwen, Mistral, GPT-2...)"

_BNB_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "lion", "lion_8bit")
# Checkpoint heads trained for something other than predicting the next token.
_OTHER_HEADS = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
                "ForMultipleChoice", "ForPreTraining", "ForNextSentencePrediction")
_GENERATIVE_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# Encoder families whose causal-LM class is a decoder variant that needs ``is_decoder: true`` in the config.
_ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "electra", "ernie",
                            "rembert", "roc_bert", "megatron-bert", "xmod", "data2vec-text", "big_bird", "roformer"})
# Where configs keep the context length (the same fields ArchSpec reads, without its 2048 fallback:
# a model that states no length, such as Mamba or RWKV, has no limit to check).
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx")


def problems(cfg: RunConfig, machine: bool = True) -> list[str]:
    """Every reason ``cfg`` cannot train, one readable line each (empty when it can start).

    Args:
        machine: also check this machine (precision, bitsandbytes); False when planning for another one.
    """
    found = validation.problems(cfg)
    if found:
        return found
    return _settings(cfg, machine) + _quantisation(cfg, machine) + _model(cfg)


def check(cfg: RunConfig) -> RunConfig:
    """Raise ConfigError with every preflight problem at once; return ``cfg`` when there are none."""
    found = problems(cfg)
    if found:
        raise ConfigError(found)
    return cfg


# --- settings that need no model -------------------------------------------------------------------------------

def _settings(cfg: RunConfig, machine: bool) -> list[str]:
    t, out = cfg.train, []
    if t.trains_nothing():
        out.append(NOTHING_TO_TRAIN)
    try:
        if machine:
            resolve_precision(t.precision)
    except ConfigError as err:
        out += err.problems
    method = methods.get(cfg.method.name)
    refusal = method.machine_refusal(method.values(cfg.method), _device()) if machine and method.machine_refusal else ""
    out += [refusal] if refusal else []
    if t.loraplus_ratio and method.family != "lora":
        out.append(f"train.loraplus_ratio: LoRA+ sets the learning rate of LoRA's B matrices; {cfg.method.name} has "
                   "none (set it to 0 or pick a LoRA-family method)")
    out += trackers.problems(t.report_to)
    out += _keep_best_problems(cfg)
    if method.checkpointing_refusal and t.gradient_checkpointing:
        out.append(f"train.gradient_checkpointing: {method.checkpointing_refusal}")
    objective = objectives.get(t.objective.name)
    if t.micro_batch_size < objective.min_micro_batch:
        out.append(f"train.micro_batch_size: {objective.name} needs at least {objective.min_micro_batch} rows per "
                   "forward pass (its KL estimate compares rows within a batch)")
    if not objective.preference and cfg.data.format in PREFERENCE_FORMATS:
        out.append(f"data.format: {cfg.data.format} rows train with a preference objective "
                   "(train.objective: dpo, orpo, simpo or kto)")
    reference_refusal = methods.get(cfg.method.name).reference_refusal
    if objective.reference and reference_refusal:
        out.append(f"train.objective: {objective.name} compares against a reference model; {reference_refusal}")
    return out + start_from.check(cfg)


def _keep_best_problems(cfg: RunConfig) -> list[str]:
    """train.keep_best picks among evaluated checkpoints: it needs held-out rows and a checkpoint at evaluations."""
    t = cfg.train
    if not t.keep_best:
        return []
    if not (cfg.data.val_fraction or cfg.data.val_path):
        return ["train.keep_best: the best checkpoint is chosen by eval loss; hold rows out (data.val_fraction or "
                "data.val_path) or set keep_best to false"]
    if t.save_steps and (not t.eval_steps or t.save_steps % t.eval_steps):
        return [f"train.save_steps: with train.keep_best every checkpoint must fall on an evaluation; leave "
                f"save_steps unset or make it a multiple of train.eval_steps (now {t.eval_steps or 'unset'})"]
    return []


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def bitsandbytes_problem(device: str) -> str | None:
    """Why bitsandbytes cannot quantise on ``device`` here, or None when it can.

    A real probe: import it and quantise a small tensor to 4 and 8 bits. Cached, since the answer holds for
    the process and the import alone takes seconds.
    """
    try:
        import bitsandbytes
        import bitsandbytes.functional as bnbf
    except Exception as err:  # ImportError, or a native library that fails to load
        return f"it cannot be imported here ({type(err).__name__}: {_first_line(err)})"
    try:
        x = torch.randn(64, 64, device=device)
        bnbf.dequantize_4bit(*bnbf.quantize_4bit(x, quant_type="nf4"))
        bnbf.int8_vectorwise_quant(x)
    except Exception as err:
        return (f"bitsandbytes {getattr(bitsandbytes, '__version__', '')} cannot quantise on this {device} "
                f"({type(err).__name__}: {_first_line(err)})")
    return None


def _quantisation(cfg: RunConfig, machine: bool) -> list[str]:
    """Quantised bases and 8-bit optimizers: bitsandbytes must work here, and the method and source allow it."""
    method = methods.get(cfg.method.name)
    quant = methods.model_spec_for(cfg.model, cfg.method).quantization
    by = f" (set by method {method.name})" if method.model_overrides(cfg.method) else ""
    out, needs = [], []
    if quant != "none":
        if method.family == "weights":
            out.append(f"method.name: {methods.quantised_refusal(method)}")
        if cfg.model.id.strip().endswith(".gguf"):
            out.append(f"model.id: a .gguf file loads dequantised, so model.quantization {quant}{by} cannot apply; "
                       "give a safetensors model folder, or pick a method without quantisation (lora)")
        needs.append((f"model.quantization: {quant}{by}", "or pick a method without quantisation (lora)"))
    if cfg.train.optimizer in _BNB_OPTIMIZERS:
        needs.append((f"train.optimizer: {cfg.train.optimizer}", "or use train.optimizer: adamw"))
    reason = bitsandbytes_problem(_device()) if needs and machine else None
    if reason:
        out += [f"{what} needs bitsandbytes, but {reason}; install it (pip install bitsandbytes) {fix}"
                for what, fix in needs]
    return out


# --- the model's config --------------------------------------------------------------------------------------

def causal_lm_problem(config) -> str | None:
    """Why a model config is not a causal language model the studio can train, or None when it is one."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kind = getattr(config, "model_type", "") or "unknown"
    archs = list(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False):
        named = f" ({archs[0]})" if archs else ""
        return f"{kind} is an encoder-decoder model{named}; {CAUSAL_ONLY}"
    remote = "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not remote:
        return f"transformers has no causal language-model class for model type {kind!r}; {CAUSAL_ONLY}"
    other = [a for a in archs if a.endswith(_OTHER_HEADS)]
    if other and not any(a.endswith(_GENERATIVE_HEADS) for a in archs):
        return f"its checkpoint is {other[0]}, which does not predict the next token; {CAUSAL_ONLY}"
    if kind in _ENCODER_TYPES and not getattr(config, "is_decoder", False):
        return (f"{kind} is an encoder (it attends both ways, so it never learned to predict the next token); "
                f"{CAUSAL_ONLY}")
    return None


def context_length(config) -> tuple[int, str] | None:
    """The model's context length and the config field that states it, or None when it states none."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in _CONTEXT_FIELDS:
        value = getattr(text, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, getattr(text, "attribute_map", {}).get(name, name)  # the name its config.json uses
    return None


def _model(cfg: RunConfig) -> list[str]:
    try:
        config = models.load_config(cfg.model)
    except ConfigError as err:
        return err.problems
    reason = causal_lm_problem(config)
    if reason:
        return [f"model.id: {reason}"]
    out = []
    limit = context_length(config)
    if limit and cfg.train.max_seq_len > limit[0]:
        out.append(f"train.max_seq_len: {cfg.train.max_seq_len} is beyond the model's context length, {limit[0]} "
                   f"tokens ({limit[1]} in its config); set it to {limit[0]} or less")
    return out + _method_on_model(cfg, config)


def _method_on_model(cfg: RunConfig, config) -> list[str]:
    method = methods.get(cfg.method.name)
    values = method.values(cfg.method)
    model = meta_model.cached(config, cfg.model.trust_remote_code)
    if model is None:  # not buildable without weights here; loading reports whatever is wrong
        return []
    out = _target_problems(method, values, model)
    if not out:
        out = _rank_problems(method, values, model)
    if method.trial_forward:
        out += _probe(cfg, config)
    return out


# --- module names and shapes from a meta-device copy ---------------------------------------------------------

def _target_problems(method, values: dict, model) -> list[str]:
    """Module-name knobs (targets, modules...) that name layers the model lacks, or match none of its layers."""
    out = []
    for knob in method.knobs:
        if not knob.picks:
            continue
        key = f"method.{knob.name}"
        resolve = tg.resolve_layers if knob.picks == "layers" else tg.resolve_modules
        try:
            names = resolve(model, values[knob.name], key)
        except ConfigError as err:
            out += err.problems
            continue
        if knob.name == "targets" and not names:
            has = ", ".join(tg.discover(model)["all-linear"])
            what = f"{', '.join(values[knob.name])} matches no layer of this model" if values[knob.name] else "empty"
            out.append(f"{key}: {what}; name some of its layers ({has}) or use all-linear")
    return out


def _sizes(module) -> tuple[int, int] | None:
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.nx, module.nf
    return None


def _rank_problems(method, values: dict, model) -> list[str]:
    """A LoRA-family rank above the smaller size of a targeted layer (the most a rank can be)."""
    knob = method.rank_knob
    if not knob or "targets" not in values:
        return []
    names = tg.resolve_layers(model, values["targets"], "method.targets")
    layers = []
    for full, module in model.named_modules():
        short = next((n for n in names if full == n or full.endswith("." + n)), None)
        sizes = _sizes(module) if short else None
        if sizes:
            layers.append((min(sizes), short, full, sizes))
    rank = values[knob]
    too_small = list(dict.fromkeys(short for size, short, _, _ in layers if size < rank))
    if not too_small:
        return []
    smallest, short, full, (i, o) = min(layers, key=lambda x: x[0])
    one = len(too_small) == 1
    return [f"method.{knob}: {rank} is more than {'layer' if one else 'layers'} {', '.join(too_small)} can take "
            f"({'' if one else 'smallest: '}{full}: in {i}, out {o} features); a LoRA rank is at most a layer's "
            f"smaller size: lower method.{knob} to {smallest} or leave {short if one else 'them'} out of "
            "method.targets"]


_lock = threading.Lock()
_probe_cache: dict[tuple, list[str]] = {}


# --- a trial forward pass for prompt-learning methods --------------------------------------------------------

def _probe(cfg: RunConfig, config) -> list[str]:
    """Apply the method to a meta-device copy and run one forward pass: what the model's forward refuses."""
    key = (id(config), cfg.method.name, repr(sorted(cfg.method.knobs.items())))
    with _lock:
        if key in _probe_cache:
            return _probe_cache[key]
    found = _trial(cfg, config)
    with _lock:
        if len(_probe_cache) >= 64:
            _probe_cache.clear()
        _probe_cache[key] = found
    return found


def _forward(model) -> None:
    ids = torch.zeros((1, 8), dtype=torch.long, device="meta")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(input_ids=ids, labels=ids)


def _trial(cfg: RunConfig, config) -> list[str]:
    method = methods.get(cfg.method.name)
    trust = cfg.model.trust_remote_code
    try:
        _forward(meta_model.build(config, trust))
    except Exception:  # noqa: BLE001 - this forward needs real weights; the trial cannot judge the method
        return []
    try:
        tokenizer = models.load_tokenizer(cfg.model)
    except ConfigError as err:
        return err.problems
    applied = None
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            applied = method.apply(meta_model.build(config, trust), cfg.method, methods.Context(tokenizer=tokenizer,
                                                                                      total_steps=100))
        _forward(applied)
    except ConfigError as err:
        return err.problems
    except Exception as err:  # noqa: BLE001 - PEFT and the model raise many kinds; each becomes one line
        return [_refusal(method, config, applied, err)]
    return []


def _refusal(method, config, applied, err: Exception) -> str:
    kind = getattr(config, "model_type", "this model")
    if isinstance(err, ValueError) and "num_attention_heads" in str(err):
        return (f"method.name: {method.title} needs the model's attention heads, and PEFT finds none in {kind}'s "
                "config (num_attention_heads, n_head or num_heads; state-space and recurrent models have no "
                "attention to put virtual tokens in); pick LoRA instead")
    why = f"{type(err).__name__}: {_first_line(err)}"
    peft_cfg = getattr(applied, "peft_config", {}).get("default") if applied is not None else None
    if method.trial_refusal is not None and peft_cfg is not None:
        return f"method.name: {method.trial_refusal(kind, peft_cfg, why)}"
    return (f"method.name: {method.title} does not fit {kind}: a trial forward pass (no weights) fails ({why}); "
            "pick LoRA instead")


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[0][:240] if lines else type(err).__name__
