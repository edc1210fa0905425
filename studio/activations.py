"""What one training step keeps for backward: the activations each decoder layer saves and the logits.

Part of the VRAM estimate (studio.memory): each function takes the model's ArchSpec and the run's
resolved settings (Run, below) and gives bytes per token or per step, from what PyTorch autograd really
saves for a Hugging Face decoder trained through the studio.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.models import ArchSpec
from studio.trace import Trace

__all__ = ["Run", "STARTS", "INSIDE_ATTENTION", "activations", "logits", "traced"]


@dataclass(frozen=True)
class Run:
    """The run settings the formulas read, resolved once (dtypes, method facts, shapes)."""

    batch: int
    virtual: int  # prompt-learning virtual tokens
    grad_from: str  # where gradients start in the bottom layer (see activations.STARTS)
    seq: int  # tokens per row the layers see (virtual tokens included)
    kv_seq: int  # tokens attention keys/values span
    w_bytes: int  # base weight dtype
    c_bytes: int  # activation / compute dtype
    autocast: bool
    quant: str | None  # 'nf4', 'fp4', '8bit' or None
    double_quant: bool
    upcast: bool  # prepare_model_for_kbit_training casts the 16-bit leftovers to fp32
    trainable: int
    base_trains: bool  # the base weights themselves train (full / freeze / bitfit)
    trained_layers: int  # layers whose linear weights train
    grad_layers: int  # layers gradient flows through
    embed_trains: bool
    adapted: frozenset  # linear names whose input an adapter branch saves
    adapter_dropout: float
    adapter_sites: int  # bottleneck adapter sites per layer
    adapter_dim: int
    eager: bool
    checkpointing: bool
    device: str
    optimizer: str
    world: int
    strategy: str
    offload: bool
    grad_accum: int
    reference_weights: bool = False  # a reference objective on a method without a switchable adapter
    gen_batch: int = 0  # answers generated at once by an online objective (GRPO), 0 for none
    fused_head: bool = False  # log-probabilities through TRL's chunked LM head (DPO, KTO, GRPO), not whole logits
    in_backward: bool = False  # train.optimizer_in_backward: each tensor stepped and its gradient freed in backward


def _saves_input(r: Run, name: str, layer_trains: bool) -> bool:
    """Whether the linear `name` keeps its input for backward: its weight trains (grad_W = grad^T x), an
    adapter branch reads it, or it is a bitsandbytes layer (MatMul4Bit/8bit save the input: bnb autograd)."""
    return layer_trains or name in r.adapted or r.quant is not None


# Where gradients start in the bottom layer when nothing below it trains: at its 'input' (a soft prompt,
# trained embeddings), 'inside' its attention (adapted q/k/v, prefix keys/values; the input norm keeps
# nothing), 'after' its attention (a serial adapter there, adapted o_proj or MLP layers: only the MLP half
# saves), or in its 'mlp' adapter (Pfeiffer / parallel: only the adapter keeps its input). Autograd saves
# nothing for ops none of whose inputs need a gradient.
STARTS = ("input", "inside", "after", "mlp")
INSIDE_ATTENTION = frozenset({"q_proj", "k_proj", "v_proj", "c_attn", "qkv_proj"})


def _layer_activations(arch: ArchSpec, r: Run, trains: bool, start: str = "input") -> float:
    """Bytes saved for backward by one decoder layer, per token (sdpa/flash or eager attention).

    Traced from autograd's saved tensors of transformers' Llama/Qwen2 layers (measured here with
    torch.autograd.graph.saved_tensors_hooks): RMSNorm keeps its input in fp32 and the normalised
    input when its weight trains; sdpa keeps q, k, v, the output and a logsumexp per head (FlashAttention,
    Dao 2022); eager keeps the fp32 softmax over heads x kv_seq per token (Korthikanti et al. 2022, eq. 2).
    ``start``: where gradients start in this layer (one of STARTS; every layer above the bottom: input).
    """
    level = STARTS.index(start)
    total = _adapter_branches(arch, r)
    if level <= 2:
        total += _norm_x(arch, r) + _mlp_half(arch, r, trains)
    if level <= 1:
        total += _attention_half(arch, r, trains)
    if level == 0:
        total += _norm_x(arch, r)
    return total


def _norm_x(arch: ArchSpec, r: Run) -> float:
    return (r.c_bytes if arch.norm_bias else 4) * arch.hidden_size + 4  # LayerNorm keeps x; RMSNorm fp32 + rsqrt


def _attention_half(arch: ArchSpec, r: Run, trains: bool) -> float:
    h, c = arch.hidden_size, r.c_bytes
    q, kv, a = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim, arch.num_heads
    save = lambda name: _saves_input(r, name, trains)  # noqa: E731
    total = c * h if trains else 0
    total += c * h if any(save(n) for n in INSIDE_ATTENTION) else 0
    # eager repeats k/v to every head (repeat_kv); so does sdpa as soon as there is a mask, which transformers
    # builds whenever the keys outnumber the queries (prefix tuning's cache): integrations/sdpa_attention.py
    kv_saved = q if r.eager or r.kv_seq != r.seq else kv
    total += c * (2 * q + 2 * kv_saved * r.kv_seq / r.seq) + 4 * a
    if r.eager:
        probs = a * r.kv_seq * (4 + (c if c != 4 else 0))  # fp32 softmax, plus its cast back to c
        total += probs + (c * q if save("o_proj") else 0)  # eager's transpose().contiguous() is a copy
    return total


def _mlp_half(arch: ArchSpec, r: Run, trains: bool) -> float:
    h, c, ff = arch.hidden_size, r.c_bytes, arch.intermediate_size
    save = lambda name: _saves_input(r, name, trains)  # noqa: E731
    total = c * h if trains else 0
    total += c * h if any(save(n) for n in ("gate_proj", "up_proj", "c_fc", "gate_up_proj")) else 0
    return total + c * (3 * ff if arch.gated_mlp else 2 * ff) + (c * ff if save("down_proj") or save("c_proj") else 0)


def _adapter_branches(arch: ArchSpec, r: Run) -> float:
    """Per-token extras of adapter branches: PEFT casts a 16-bit input to the fp32 adapter dtype
    (LoraLayer._cast_input_dtype) and dropout>0 makes a copy and a mask; lora_A's output is kept."""
    h, ff = arch.hidden_size, arch.intermediate_size
    ins = {"down_proj": ff, "c_proj": ff}
    total = 0.0
    for name in r.adapted:
        width = ins.get(name, arch.num_heads * arch.head_dim if name == "o_proj" else h)
        if r.c_bytes != 4 and not r.autocast:
            total += 4 * width
        if r.adapter_dropout > 0:
            total += (4 if r.c_bytes == 4 else r.c_bytes) * width + width  # dropped copy + bool mask
        total += 4 * r.adapter_dim
    total += r.adapter_sites * (r.c_bytes * (h + 2 * r.adapter_dim))
    return total


def activations(arch: ArchSpec, r: Run) -> tuple[float, float]:
    """(bytes saved for backward by all layers at the end of forward, per-layer backward working set)."""
    tokens = r.batch * r.seq
    frozen_layers = r.grad_layers - r.trained_layers
    per_trained = _layer_activations(arch, r, True)
    per_frozen = _layer_activations(arch, r, False)
    one_layer = max(per_trained if r.trained_layers else 0, per_frozen if frozen_layers else 0)
    if r.checkpointing:
        # HF checkpoints each decoder layer: only its input stays (Chen et al. 2016, "sqrt(n) memory");
        # backward recomputes one layer at a time, so one layer's activations come back at once.
        saved = r.grad_layers * r.c_bytes * arch.hidden_size * tokens
        working = one_layer * tokens
    else:
        saved = (r.trained_layers * per_trained + frozen_layers * per_frozen) * tokens
        if r.grad_from != "input" and r.grad_layers == arch.num_layers and r.trained_layers < arch.num_layers:
            # the bottom layer (a frozen one) keeps only what lies after the first piece that trains
            saved -= (per_frozen - _layer_activations(arch, r, False, r.grad_from)) * tokens
        working = 0.0
    # final norm: x (fp32 for RMSNorm) always; normed and lm_head input when the head trains
    final = (4 * arch.hidden_size + 4) + (2 * r.c_bytes * arch.hidden_size if r.embed_trains else 0)
    # backward keeps a few gradient tensors of the layer in flight (grad of the residual, of the MLP
    # intermediates): measured ~ 2 hidden + 2 intermediate widths per token in the compute dtype
    working += r.c_bytes * (2 * arch.hidden_size + 2 * arch.intermediate_size) * tokens
    if r.eager:
        working += 2 * 4 * arch.num_heads * r.kv_seq * tokens  # grad of the scores and of the softmax
    return saved + final * tokens, working


def logits(arch: ArchSpec, r: Run) -> tuple[float, float]:
    """(forward, backward) bytes of the logits and loss.

    transformers' ForCausalLMLoss upcasts the logits to fp32 and cross_entropy keeps the fp32 log_softmax
    output; backward holds that output, the fp32 gradient from nll_loss and the gradient log_softmax makes
    (aten log_softmax_backward_data): 12 B per batch x seq x vocab element, 10-16 B in the forward.
    """
    n = r.batch * r.seq * arch.vocab_size
    upcast = 4 if r.c_bytes != 4 else 0
    forward = n * (r.c_bytes + upcast + 4)
    backward = n * 12
    return forward, backward


def traced(arch: ArchSpec, r: Run, t: Trace) -> dict:
    """The activation and logits terms from a trace of the real architecture (studio.trace), in bytes:
    'saved' (end of forward, every layer and the embedding), 'routed' (the part of 'saved' kept for the
    routed tokens inside expert modules), 'working' (backward's per-layer working set), 'logits_forward'
    and 'logits_backward' (the head and loss at the end of forward and at the start of backward).

    The trace counts what the head and loss save (the fp32 log_softmax, soft-capping's tanh, the final
    norm); the formulas add what lives beside it without being saved: the logits and their fp32 copy in
    the forward, the loss's two fp32 gradients at the start of backward (see ``logits``).
    """
    seq = r.kv_seq - r.virtual  # the rows' own tokens: the trace adds the method's virtual tokens itself
    tokens, n = r.batch * r.seq, r.batch * r.seq * arch.vocab_size
    head = t.saved("head", seq) * r.batch
    per_layer = [t.layer(i, seq) * r.batch for i in range(len(t.layers))]
    working = r.c_bytes * (2 * arch.hidden_size + 2 * arch.intermediate_size) * tokens
    if r.eager:
        working += 2 * 4 * arch.num_heads * r.kv_seq * tokens  # grad of the scores and of the softmax
    if r.checkpointing:  # each layer keeps its input; backward recomputes one layer at a time
        saved, routed = len(per_layer) * r.c_bytes * arch.hidden_size * tokens, 0.0
        working += max(per_layer, default=0.0)
    else:
        saved, routed = sum(per_layer), t.saved("routed", seq) * r.batch
    upcast = 4 if r.c_bytes != 4 else 0
    return {"saved": saved + t.saved("embed", seq) * r.batch, "routed": routed, "working": working,
            "logits_forward": head + n * (r.c_bytes + upcast), "logits_backward": head + 8 * n}
