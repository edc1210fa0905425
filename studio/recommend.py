"""Which method to try first, from the model's size, the memory at hand and the goal.

The rules follow the decision advice in the PEFT literature: QLoRA when memory is tight (Dettmers et
al. 2023), full fine-tuning only for small models with room to spare, LoRA as the default for style
and format changes (Hu et al. 2021), LoRA on every linear layer at a higher rank for new knowledge
(Biderman et al. 2024, "LoRA learns less and forgets less"), (IA)^3 for classification-like tasks
(T-Few, Liu et al. 2022), and prompt methods when each task's stored result must be tiny (Lester et
al. 2021). The memory figures are rules of thumb; ``studio.memory`` gives the real breakdown.

    rec = recommend(params=7e9, memory_bytes=24 * 2**30, goal="style")
    rec.method, rec.knobs, rec.reason
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studio import memory
from studio.config import ConfigError, MethodSpec

__all__ = ["GOALS", "Recommendation", "Experts", "experts_of", "recommend", "BYTES_PER_PARAM"]

GOALS = {
    "style": "a quick change of tone, format or persona",
    "knowledge": "teach new facts or a new domain",
    "classification": "pick one label from a fixed set",
    "minimal_storage": "many tasks, each stored as small as possible",
}

# Bytes per base parameter while training, before activations:
# full: bf16 weights + bf16 grads + fp32 master copy + two fp32 Adam moments (ZeRO, Rajbhandari et al. 2020);
# the others hold only the frozen base: 16-bit, LLM.int8() or NF4 with double-quantised constants (~4.13 bits).
BYTES_PER_PARAM = {"full": 16.0, "16bit": 2.0, "8bit": 1.0, "4bit": 0.52}
_HEADROOM = 1.25  # activations, the adapter's optimizer state and framework overhead, for short sequences
_SMALL_MODEL = 1.5e9  # below this, full fine-tuning is cheap enough to be worth its capacity


@dataclass(frozen=True)
class Recommendation:
    """A method, the knobs to start from, and the one-line reason."""

    method: str
    reason: str
    knobs: dict = field(default_factory=dict)

    def spec(self) -> MethodSpec:
        return MethodSpec(self.method, dict(self.knobs))

    def overrides(self) -> list[str]:
        """The recommendation as ``--set`` assignments (lists comma-separated, as the CLI reads them)."""
        return [f"method.name={self.method}"] + [
            f"method.{k}={','.join(v) if isinstance(v, list) else v}" for k, v in self.knobs.items()]


@dataclass(frozen=True)
class Experts:
    """A mixture-of-experts model's routing facts, as the advice needs them."""

    count: int  # routed experts per layer
    top_k: int  # experts each token goes through
    params: int  # all routed experts' weights
    lora_per_rank: int  # LoRA parameters per unit of rank if every expert's three matrices were adapted


def experts_of(arch) -> Experts | None:
    """The Experts of ``arch`` (an ArchSpec), or None for a dense model."""
    n = memory.expert_parameters(arch)
    if not arch.num_experts or not n:
        return None
    h = arch.hidden_size
    ff = n / (arch.num_experts * arch.num_layers * 3 * h)  # each expert: gate, up (h x ff) and down (ff x h)
    return Experts(arch.num_experts, arch.experts_per_token, n, int(arch.num_experts * arch.num_layers * 3 * (h + ff)))


def _moe_reason(experts: Experts, params: float, r: int) -> str:
    """What LoRA on attention versus on every expert costs, for the reason line."""
    on_experts = experts.lora_per_rank * r
    return (f"; mixture of experts ({experts.count} experts, top-{experts.top_k}): {experts.params / params:.0%} of "
            f"the weights are experts, which LoRA leaves frozen here (attention and dense layers only); adapting "
            f"every expert at rank {r} would add ~{on_experts / 1e6:.0f}M trainable parameters "
            f"(~{on_experts * 16 / 2**30:.1f} GB with gradients and AdamW state), while each token uses only "
            f"{experts.top_k} of them")


def _need(params: float, kind: str) -> float:
    return params * BYTES_PER_PARAM[kind] * _HEADROOM


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def _tight(params: float, memory: float, goal_knobs: dict, what: str) -> Recommendation:
    """The base does not fit in 16-bit: QLoRA, or a clear refusal when not even 4-bit fits."""
    if _need(params, "4bit") > memory:
        raise ConfigError(f"even a 4-bit base needs about {_gb(_need(params, '4bit'))}, more than the "
                          f"{_gb(memory)} available; pick a smaller model or a bigger GPU")
    return Recommendation("qlora", f"a 16-bit base needs ~{_gb(_need(params, '16bit'))}, more than {_gb(memory)}; "
                                   f"QLoRA's 4-bit base needs ~{_gb(_need(params, '4bit'))} and {what}", goal_knobs)


def recommend(params: float, memory_bytes: float, goal: str = "style",
              experts: Experts | None = None) -> Recommendation:
    """Suggest a method for a model of ``params`` parameters with ``memory_bytes`` of accelerator memory.

    Args:
        params: the base model's parameter count (every expert's, for a mixture of experts).
        memory_bytes: memory available for training (one GPU's, or the CPU's when training there).
        goal: one of GOALS.
        experts: the routing facts of a mixture-of-experts model (experts_of); None for a dense model.

    Returns:
        A Recommendation; ConfigError when the goal is unknown or no method fits.
    """
    rec = _recommend(params, memory_bytes, goal, experts)
    if experts is None or rec.method not in ("lora", "qlora"):
        return rec
    return Recommendation(rec.method, rec.reason + _moe_reason(experts, params, int(rec.knobs.get("r", 8))),
                          rec.knobs)


def _recommend(params: float, memory_bytes: float, goal: str, experts: Experts | None) -> Recommendation:
    if goal not in GOALS:
        raise ConfigError(f"goal {goal!r} is not one of {', '.join(GOALS)}")
    if params <= 0 or memory_bytes <= 0:
        raise ConfigError("model size and memory must be positive")
    fits16 = _need(params, "16bit") <= memory_bytes
    if goal == "knowledge":
        knobs = {"r": 64, "alpha": 128.0, "targets": ["all-linear"]}
        # full training of a mixture of experts trains every expert: never the cheap option
        if experts is None and params <= _SMALL_MODEL and _need(params, "full") <= memory_bytes:
            return Recommendation("full", f"a small model ({params / 1e9:.2f}B) whose full training fits "
                                          f"(~{_gb(_need(params, 'full'))}): the most capacity for new facts")
        if not fits16:
            return _tight(params, memory_bytes, knobs, "rank 64 on every linear layer gives room for new facts")
        return Recommendation("lora", "LoRA at rank 64 on every linear layer: new facts need more capacity than "
                                      "attention-only LoRA, at a fraction of full fine-tuning's memory", knobs)
    if not fits16:
        return _tight(params, memory_bytes, {"r": 4} if goal == "minimal_storage" else {},
                      "LoRA's small adapter is enough for this goal")
    if goal == "style":
        return Recommendation("lora", "LoRA rank 8 on attention: style and format changes need little capacity; "
                                      "small, fast to train, and mergeable", {"r": 8, "targets": ["attention"]})
    if goal == "classification":
        return Recommendation("ia3", "(IA)\u00b3 rescales keys, values and MLP activations with ~0.01% of the "
                                     "weights and matches full fine-tuning on few-shot classification (T-Few)")
    if params >= 1e9:
        return Recommendation("prompt", "prompt tuning stores only the soft prompt (tokens x hidden size, a few "
                                        "hundred KB) and nears full fine-tuning on billion-parameter models",
                              {"num_virtual_tokens": 20})
    return Recommendation("ia3", "on models below ~1B prompt tuning is weak; (IA)\u00b3's result is nearly as "
                                 "small (tens of KB) and trains reliably")
