"""VRAM estimate from a model config and the run settings alone: a breakdown in bytes, pure and fast.

The model follows what PyTorch autograd really keeps for a Hugging Face decoder (Llama / Mistral / Qwen2
style) trained through the studio: which tensors each op saves for backward depends on which weights
train, so a frozen base with LoRA on q,v saves much less than full fine-tuning. Terms are named like the
parts a person can change (weights, optimizer, activations, logits) and each cites its source.

    bd = estimate(arch, cfg)                # Breakdown, bytes
    bd.peak_bytes, bd.to_dict()

Peak is the maximum over the phases of a step (end of forward, start and end of backward, optimizer
step), never the sum of every part. ``allocated_peak_bytes`` is what ``torch.cuda.max_memory_allocated``
reports; ``peak_bytes`` adds the framework margin and the CUDA context (which the allocator never sees).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from studio import activations as saved_for_backward
from studio import known_models, losses, methods, objectives
from studio import targets as tg
from studio import trace as tracer
from studio.activations import Run
from studio.config import RunConfig
from studio.models import ArchSpec, ModelError, read_arch

__all__ = ["Breakdown", "estimate", "resolve_arch", "parameters", "expert_parameters", "format_bytes", "PARTS",
           "LABELS"]

GiB = 1024 ** 3
_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

# bitsandbytes 4-bit: 4-bit codes (0.5 B) + one fp32 absmax per 64-weight block (4/64 B). With double
# quantisation the absmax are themselves 8-bit (1/64 B) plus one fp32 constant per 256 blocks.
# Source: Dettmers et al. 2023, "QLoRA", section 3 (0.5 + 32/64 bits -> 0.127 bit/param with DQ).
_NF4_BYTES = 0.5 + 4 / 64
_NF4_DQ_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
# LLM.int8(): int8 weights plus one fp32 scale per output row (Dettmers et al. 2022), per-row term added below.
_INT8_BYTES = 1.0
# bitsandbytes 8-bit optimizers: two uint8 states + one fp32 absmax per 256-value block each
# (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"). Tensors < 4096 values stay 32-bit.
_ADAM8_BYTES = 2 * (1 + 4 / 256)
# CUDA context (driver, kernels, cuBLAS handles): 300-800 MiB depending on GPU and driver; the caching
# allocator does not see it (PyTorch docs, "CUDA semantics > memory management").
CUDA_CONTEXT_BYTES = 512 * 1024 ** 2
# Caching-allocator rounding and fragmentation: reserved exceeds allocated by a few percent in steady
# training (PyTorch docs, torch.cuda.memory_reserved). A planning margin, not measured on this machine.
_FRAMEWORK_FRACTION = 0.05

PARTS = ("weights", "expert_weights", "quant_constants", "upcast_fp32", "trainable", "gradients", "optimizer",
         "activations", "routed_activations", "logits", "step_transient", "guard", "framework", "cuda_context")


@dataclass
class Breakdown:
    """Bytes per part of a training step's memory, per GPU, and the peak over its phases."""

    weights: int = 0
    expert_weights: int = 0  # routed experts of a mixture-of-experts model (all of them, not only the top-k)
    quant_constants: int = 0
    upcast_fp32: int = 0
    trainable: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    routed_activations: int = 0  # what the routed tokens keep inside the expert modules
    logits: int = 0
    step_transient: int = 0
    guard: int = 0  # the stay-close-to-base guards: EWC's anchor and Fisher, the KL's base logits (_guard)
    framework: int = 0
    cuda_context: int = 0
    generation_kv: int = 0  # GRPO: KV cache and sampling logits while answers are written (its own phase)
    allocated_peak_bytes: int = 0
    peak_bytes: int = 0
    peak_phase: str = ""
    phases: dict = field(default_factory=dict)
    trainable_params: int = 0
    total_params: int = 0
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """Every part in bytes, the phases and the peak, JSON-ready."""
        return asdict(self)

    @property
    def static_bytes(self) -> int:
        """What stays resident between steps: weights, adapters, optimizer state."""
        return (self.weights + self.expert_weights + self.quant_constants + self.upcast_fp32 + self.trainable
                + self.optimizer)


def _dtype_bytes(name: str, device: str, auto: str) -> int:
    return _DTYPE_BYTES[auto if name == "auto" else name]


def _layer_params(arch: ArchSpec) -> int:
    h, q, kv, ff = arch.hidden_size, arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim, \
        arch.intermediate_size
    return 2 * h * q + 2 * h * kv + (3 if arch.gated_mlp else 2) * h * ff


def _resolve(arch: ArchSpec, cfg: RunConfig, world_size: int, device: str) -> Run:
    method = methods.get(cfg.method.name)
    values = method.values(cfg.method)
    trainable = int(method.trainable(arch, cfg.method))
    base_trains = method.family == "weights"
    per_layer = max(1, _layer_params(arch))
    if base_trains:
        trained_layers = min(arch.num_layers, int(round(trainable / per_layer)))
        embed_trains = trainable >= arch.num_parameters * 0.999
        # freezing the bottom layers stops gradient there; bias/norm-only training still flows through all
        grad_layers = trained_layers if trained_layers else arch.num_layers
    else:
        trained_layers, embed_trains, grad_layers = 0, False, arch.num_layers
    targets = values.get("targets")
    adapted: frozenset = frozenset()
    if isinstance(targets, list):
        adapted = frozenset(n.split(".")[-1] for n in tg.expand(targets, tg.for_arch(arch)))
    virtual = int(values.get("num_virtual_tokens") or 0)
    at_input = method.memory.virtual_tokens == "input"  # prefix tuning: only the keys/values grow
    seq = min(cfg.train.max_seq_len, 10 ** 9)
    model = methods.model_spec_for(cfg.model, cfg.method)  # QLoRA-style methods set the quantisation
    quant = model.quantization if model.quantization != "none" else None
    auto_w = "bf16" if device == "cuda" else "fp32"
    w_bytes = _dtype_bytes(model.dtype, device, auto_w)
    p = cfg.train.precision
    c_name = ("bf16" if device == "cuda" else "fp32") if p == "auto" else p
    if quant in ("nf4", "fp4"):
        cd = model.compute_dtype
        c_name = "bf16" if cd == "auto" else cd
    c_bytes = min(_DTYPE_BYTES[c_name], w_bytes) if quant is None else _DTYPE_BYTES[c_name]
    dist = cfg.train.distributed
    # the objective's terms: paired objectives run chosen and rejected (two sequences per row); a reference
    # without a switchable adapter is a second copy of the weights (its forward runs without gradients)
    terms = objectives.get(cfg.train.objective.name).memory_terms(method.fmt != "peft", cfg.train.objective)
    # an online objective (GRPO) trains on prompt + its own answer, and first writes micro x accum answers at once
    answer = terms.get("answer_tokens", 0)
    seq += answer
    return Run(
        gen_batch=cfg.train.micro_batch_size * cfg.train.grad_accum if answer else 0,
        batch=cfg.train.micro_batch_size * terms["sequences_per_row"], virtual=virtual,
        reference_weights=terms["reference_weights"], fused_head=terms["fused_head"],
        grad_from=_grad_from(method, values, adapted, embed_trains, base_trains, virtual, at_input),
        seq=seq + (virtual if at_input else 0), kv_seq=seq + virtual,
        w_bytes=w_bytes, c_bytes=c_bytes, autocast=_DTYPE_BYTES[c_name] < w_bytes and quant is None,
        quant=quant, double_quant=model.double_quant, upcast=bool(quant) and method.memory.kbit_upcast,
        trainable=trainable, base_trains=base_trains, trained_layers=trained_layers, grad_layers=grad_layers,
        embed_trains=embed_trains, adapted=adapted, adapter_dropout=float(values.get("dropout") or 0.0),
        adapter_sites=len(method.memory.parts(values)),
        adapter_dim=int(values.get("size") or values.get("r") or values.get("init_r") or 64),
        eager=model.attn_implementation == "eager",
        checkpointing=cfg.train.gradient_checkpointing or bool(values.get("gradient_checkpointing")),
        device=device, optimizer=cfg.train.optimizer, world=max(1, world_size),
        strategy=dist.strategy if world_size > 1 else "none", offload=dist.offload, grad_accum=cfg.train.grad_accum,
        in_backward=cfg.train.optimizer_in_backward,
    )


def _grad_from(method, values: dict, adapted: frozenset, embed_trains: bool, base_trains: bool, virtual: int,
               at_input: bool) -> str:
    """Where gradients start in the bottom layer (one of activations.STARTS), from what the method trains there."""
    if embed_trains or (virtual and at_input):
        return "input"
    parts = method.memory.parts(values)
    if parts:  # bottleneck adapters: the first one reads the attention output, or sits by the MLP
        return "after" if "attention" in parts else "mlp"
    if base_trains or virtual or adapted & saved_for_backward.INSIDE_ATTENTION or not adapted:
        return "inside"
    return "after"  # o_proj or MLP layers only


# ---------------------------------------------------------------- static parts

def _weights(arch: ArchSpec, r: Run, total: int) -> tuple[int, int, int]:
    """(weights, quantisation constants, fp32 upcast) in bytes.

    bitsandbytes quantises only the Linear layers inside the blocks; embeddings, LM head, norms and biases
    stay at the load dtype (transformers `replace_with_bnb_linear` skips `lm_head`). PEFT's
    `prepare_model_for_kbit_training` then casts those 16-bit leftovers to fp32 (peft/utils/other.py).
    """
    if r.quant is None:
        return total * r.w_bytes, 0, 0
    linear = arch.num_layers * _layer_params(arch)
    rest = total - linear
    if r.quant == "8bit":
        rows = arch.num_layers * _layer_rows(arch)
        codes, consts = linear * _INT8_BYTES, rows * 4
    else:
        per = _NF4_DQ_BYTES if r.double_quant else _NF4_BYTES
        codes, consts = linear * 0.5, linear * (per - 0.5)
    rest_bytes = rest * r.w_bytes
    upcast = rest * (4 - r.w_bytes) if r.upcast and r.w_bytes < 4 else 0
    return int(codes + rest_bytes), int(consts), int(upcast)


def _layer_rows(arch: ArchSpec) -> int:
    h, q, kv, ff = arch.hidden_size, arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim, \
        arch.intermediate_size
    return q + 2 * kv + h + (2 if arch.gated_mlp else 1) * ff + h


def _trainable_bytes(r: Run) -> int:
    # PEFT keeps adapter weights in fp32 even on a 16-bit base (autocast_adapter_dtype=True, peft docs);
    # weight-training methods train the base weights, already counted in `weights`.
    return 0 if r.base_trains else r.trainable * 4


def _param_bytes(r: Run) -> int:
    return r.w_bytes if r.base_trains else 4


def _optimizer(r: Run) -> int:
    """Optimizer state. AdamW keeps exp_avg and exp_avg_sq like the parameter (torch.optim.AdamW docs)."""
    n, pb = r.trainable, _param_bytes(r)
    return int({
        "adamw": 2 * n * pb, "adamw_fused": 2 * n * pb, "paged_adamw_32bit": 2 * n * 4,
        "adamw_8bit": n * _ADAM8_BYTES, "paged_adamw_8bit": n * _ADAM8_BYTES,
        "sgd": 0,  # torch.optim.SGD with momentum=0 (the Trainer's default) keeps no state
        # Adafactor (Shazeer & Stern 2018; no first moment in the Trainer): a row and a column vector per matrix
        "adafactor": 0, "lion": n * 4, "lion_8bit": n * _ADAM8_BYTES / 2,  # Lion: one momentum (Chen et al. 2023)
    }[r.optimizer])


def _guard(arch: ArchSpec, cfg: RunConfig, r: Run) -> tuple[int, int]:
    """(EWC, KL) bytes of the stay-close-to-base guards (studio.base_guard). EWC keeps an fp32 anchor and an fp32
    Fisher per trained parameter, resident all run. The KL guard holds the base's fp32 logits over the whole batch
    and the tuned log-probabilities kept for backward: two batch x seq x vocab fp32 tensors through the loss."""
    ewc = 8 * r.trainable if cfg.train.ewc > 0 else 0
    kl = 2 * r.batch * r.seq * arch.vocab_size * 4 if cfg.train.kl_to_base > 0 else 0
    return ewc, kl


def _largest_trainable(arch: ArchSpec, r: Run, t) -> int:
    """Parameters of the largest trained tensor (traced where the architecture was, else from its shape)."""
    if t is not None:
        return t.largest_trainable
    if r.embed_trains:
        return min(r.trainable, arch.vocab_size * arch.hidden_size)
    if r.base_trains:
        return min(r.trainable, arch.hidden_size * arch.intermediate_size)
    return r.trainable // max(1, arch.num_layers)


def _step_transient(r: Run, largest: int) -> int:
    """Temporaries of optimizer.step(). torch's foreach AdamW (default on CUDA) makes one sqrt(exp_avg_sq)
    buffer over all parameters; the single-tensor loop (CPU) one per parameter (torch/optim/adamw.py)."""
    if r.optimizer in ("sgd", "lion", "adamw_fused") or r.optimizer.endswith("8bit"):  # fused: updates in place
        return 0
    pb = 4 if r.optimizer == "paged_adamw_32bit" else _param_bytes(r)
    if r.device == "cuda":
        return r.trainable * pb
    return min(r.trainable, largest) * pb


# ---------------------------------------------------------------- the estimate

def estimate(arch: ArchSpec, cfg: RunConfig, world_size: int = 1, device: str = "cuda") -> Breakdown:
    """Memory of one training step of ``cfg`` on ``arch``, per device, in bytes.

    Args:
        arch: the architecture (from a config alone).
        cfg: the run settings.
        world_size: number of GPUs; with train.distributed.strategy fsdp / deepspeed-zero3 the weights,
            gradients and optimizer state are sharded across them, with zero2 the optimizer (and gradients).
        device: 'cuda' (plans for a GPU: bf16 by default, CUDA context, foreach AdamW) or 'cpu'.

    Returns:
        A Breakdown with every part, the phase totals and the peak.
    """
    r = _resolve(arch, cfg, world_size, device)
    t = _trace(arch, cfg, r)
    if t is not None:  # the real architecture's own counts: experts, routers, fused or extra weights
        r = replace(r, trainable=t.trainable)
        terms = saved_for_backward.traced(arch, r, t)
    else:
        saved, working = saved_for_backward.activations(arch, r)
        logit_fwd, logit_bwd = saved_for_backward.logits(arch, r)
        terms = {"saved": saved, "routed": 0, "working": working, "logits_forward": logit_fwd,
                 "logits_backward": logit_bwd}
    total = t.params if t is not None else parameters(arch)
    weights, consts, upcast = _weights(arch, r, total)
    if r.reference_weights:  # the frozen reference copy (full fine-tuning and other weight methods)
        weights, consts = 2 * weights, 2 * consts
    trainable = _trainable_bytes(r)
    grads = r.trainable * _param_bytes(r)
    optim = _optimizer(r)
    largest = _largest_trainable(arch, r, t)
    transient = _step_transient(r, largest)
    if cfg.train.loss_chunk_tokens and not (r.embed_trains or r.virtual or r.kv_seq != r.seq):  # studio.losses
        terms["logits_forward"], terms["logits_backward"] = losses.chunked_loss_bytes(
            arch.vocab_size, arch.hidden_size, r.batch * r.seq, cfg.train.loss_chunk_tokens, r.c_bytes)
    if r.fused_head:  # TRL's chunked log-prob head: one tile buffer and its temporaries, never the whole logits
        terms["logits_forward"], terms["logits_backward"] = losses.trl_logprob_bytes(
            arch.vocab_size, arch.hidden_size, r.batch * r.seq, r.c_bytes, r.device)
    gen_kv = _generation(arch, r)
    weights, consts, grads, optim, transient, extra_grads = _shard(r, weights, consts, grads, optim, transient)
    ewc, kl = _guard(arch, cfg, r)
    static = weights + consts + upcast + trainable + optim + ewc
    grads_held = grads if r.grad_accum > 1 else 0  # accumulated gradients live through later forwards
    saved = terms["saved"]
    phases = {
        "forward": static + grads_held + saved + terms["logits_forward"] + kl,
        "backward_start": static + grads_held + saved + terms["logits_backward"] + kl,
        "backward_end": static + grads + extra_grads + terms["working"],
        "optimizer_step": static + grads + extra_grads + transient,
    }
    if r.in_backward:  # one tensor's gradient and its step at a time: the gradients never add up
        grads = largest * _param_bytes(r)
        transient = 0 if r.optimizer in ("sgd", "adamw_fused") else grads  # the loop's temporaries of that tensor
        phases["backward_end"] = static + grads + terms["working"] + transient
        del phases["optimizer_step"]  # nothing is left for it to do
    if gen_kv:
        phases["generation"] = static + gen_kv
    # during backward activations shrink while gradients grow (both linear in the layer index), so the
    # two ends bound the middle
    phase = max(phases, key=phases.get)
    allocated = int(phases[phase])
    framework = int(allocated * _FRAMEWORK_FRACTION) if device == "cuda" else 0
    context = CUDA_CONTEXT_BYTES if device == "cuda" else 0
    experts = int(weights * t.expert_params / max(t.params, 1)) if t is not None else 0
    return Breakdown(
        weights=int(weights) - experts, expert_weights=experts, quant_constants=int(consts),
        upcast_fp32=int(upcast), trainable=int(trainable), gradients=int(grads + extra_grads), optimizer=int(optim),
        activations=int(saved - terms["routed"]), routed_activations=int(terms["routed"]),
        logits=int(terms["logits_backward"]), step_transient=int(transient), guard=int(ewc + kl), framework=framework,
        cuda_context=context, generation_kv=int(gen_kv), allocated_peak_bytes=allocated,
        peak_bytes=allocated + framework + context,
        peak_phase=phase, phases={k: int(v) for k, v in phases.items()}, trainable_params=r.trainable,
        total_params=total, notes=_notes(r) + (["traced from the model's own modules"] if t is not None else []) + ([
            f"writing {r.gen_batch} answers at once: {gen_kv / GiB:.2f} GiB of KV cache and sampling logits "
            f"(phase 'generation', {phases['generation'] / GiB:.2f} GiB with the static parts)"] if gen_kv else []),
    )


def _trace(arch: ArchSpec, cfg: RunConfig, r: Run):
    """The trace of ``arch`` with the run's method (studio.trace), or None where tracing cannot reach:
    no config to build from, or a quantised base (bitsandbytes layers need real weights)."""
    if not arch.config or r.quant is not None:
        return None
    dtype = "fp32" if min(r.w_bytes, r.c_bytes) == 4 else "bf16"
    knobs = json.dumps(cfg.method.knobs, sort_keys=True, default=str)
    attn = "eager" if r.eager else "sdpa"
    return tracer.trace(arch.config, cfg.method.name, knobs, dtype, attn, r.device)


def _generation(arch: ArchSpec, r: Run) -> int:
    """KV cache of an online objective's answers: keys and values of every layer for every token of
    ``gen_batch`` sequences (prompt + answer), as HF generate's DynamicCache holds them, plus one step's
    fp32 logits over the vocabulary for sampling (Kaplan et al. 2020 style per-token KV: 2 x layers x kv dim)."""
    if not r.gen_batch:
        return 0
    kv = 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * r.c_bytes * r.gen_batch * r.kv_seq
    return int(kv + r.gen_batch * arch.vocab_size * 4 * 2)


def _shard(r: Run, weights, consts, grads, optim, transient):
    """Per-GPU shares under a distributed strategy (ZeRO, Rajbhandari et al. 2020: stage 2 shards
    optimizer state and gradients, stage 3 / FSDP also the weights). DDP keeps a bucket copy of every
    gradient unless gradient_as_bucket_view (torch DistributedDataParallel docs)."""
    w = r.world
    extra = 0
    if r.strategy == "ddp":
        extra = grads
    elif r.strategy == "deepspeed-zero2":
        grads, optim, transient = grads / w, optim / w, transient / w
    elif r.strategy in ("fsdp", "deepspeed-zero3"):
        weights, consts, grads, optim, transient = weights / w, consts / w, grads / w, optim / w, transient / w
    if r.offload and r.strategy != "none":
        optim, transient = 0, 0
    return weights, consts, grads, optim, transient, extra


def _notes(r: Run) -> list[str]:
    notes = []
    if r.strategy != "none":
        notes.append(f"per GPU with {r.strategy} over {r.world} GPUs")
    if r.optimizer.startswith("paged"):
        notes.append("paged optimizer state can spill to CPU memory under pressure")
    if r.quant and r.upcast:
        notes.append("embeddings, LM head and norms upcast to fp32 (prepare_model_for_kbit_training)")
    return notes


# ---------------------------------------------------------------- architecture and CLI

def resolve_arch(model_spec) -> tuple[ArchSpec, str]:
    """The architecture of ``model_spec`` for planning, and where it came from; every face (CLI, tabs) asks
    this one function. In order: the model's own config (from the hub when it answers, else the local
    Hugging Face cache or folder: studio.models), then the table of well-known models (studio.known_models,
    the published config.json values). Returns (arch, 'config') or (arch, a sentence naming the table
    entry and its assumptions). Raises ModelError when neither knows the model.
    """
    try:
        return read_arch(model_spec), "config"
    except ModelError as err:
        hit = known_models.lookup(model_spec.id)
        if hit is None:
            raise err from None
        key, arch = hit
        note = known_models.ASSUMPTIONS.get(key, "")
        return arch, (f"the published config.json of {key} (built-in table: the model's own config could not be "
                      f"read){'; ' + note if note else ''}")


def parameters(arch: ArchSpec) -> int:
    """The model's parameter count: counted on the real architecture built from its config where it
    builds (every expert, fused and extra weights), else from the shapes."""
    return (tracer.parameters(arch.config)[0] if arch.config else 0) or arch.num_parameters


def expert_parameters(arch: ArchSpec) -> int:
    """Parameters of the routed experts of a mixture-of-experts model (all of them); 0 for a dense model."""
    return tracer.parameters(arch.config)[1] if arch.config and arch.num_experts else 0


def format_bytes(n: float) -> str:
    """Bytes as GB with two decimals (1 GB = 10^9 B, as GPU boards are sold), MB below 1 GB."""
    return f"{n / 1e9:.2f} GB" if abs(n) >= 1e9 else f"{n / 1e6:.1f} MB"


# what the UI and the CLI call each part
LABELS = {
    "weights": "base weights", "expert_weights": "expert weights (all experts)",
    "routed_activations": "routed-token activations", "quant_constants": "quantisation constants",
    "upcast_fp32": "fp32 upcast (k-bit prep)",
    "trainable": "trainable parameters", "gradients": "gradients", "optimizer": "optimizer state",
    "activations": "activations", "logits": "logits and loss", "step_transient": "optimizer step temporaries",
    "framework": "allocator margin", "cuda_context": "CUDA context",
}
