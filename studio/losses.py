"""The causal-LM loss computed in chunks, so the full-vocabulary fp32 logits are never held at once.

The plain loss makes logits for every position (batch x seq x vocab: SmolLM2 49k, Llama-3 128k, Qwen
152k entries a token), upcasts them to fp32 and keeps the fp32 log-softmax for backward: at long
sequences that is the largest single term of a step's memory. Here the output head is applied to the
final hidden states of the positions that carry loss only, a chunk of tokens at a time; each chunk's
logits are made in the head's compute dtype, turned into fp32 for the log-sum-exp, and their gradient
(softmax minus one-hot) is pushed through the head at once, so what is kept for backward is one
gradient row per loss token of the hidden width, not the vocabulary width. The same idea as Liger
Kernel's fused linear cross-entropy and torchtune's chunked cross-entropy, in plain PyTorch (no extra
FLOPs: the head's forward and its backward for the hidden state are done once each, only earlier).

    loss_sum = chunked_lm_loss(hidden, head_weight, labels, chunk=256)  # sum over loss tokens
"""

from __future__ import annotations

import torch

__all__ = ["IGNORE", "chunked_lm_loss", "chunked_loss_bytes", "chunked_model_loss", "head_for_chunked_loss",
           "trl_logprob_bytes"]

IGNORE = -100
"""Label of positions that carry no loss (transformers' and PyTorch's convention)."""


class _ChunkedLinearCE(torch.autograd.Function):
    """sum_i CE(h_i W^T, y_i) over rows of ``hidden`` with the gradient for ``hidden`` made in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, compute_dtype: torch.dtype):
        grad_hidden = torch.empty_like(hidden)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):  # dtypes are set here, explicitly
            w = weight.to(compute_dtype)
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start:start + chunk].to(compute_dtype)
                y = targets[start:start + chunk]
                logits = (h @ w.t()).float()  # as the plain head + ForCausalLMLoss's upcast
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
                # d(sum CE)/d logits = softmax - one_hot, made in place over the chunk's fp32 logits
                probs = logits.sub_(lse[:, None]).exp_()
                probs[torch.arange(y.shape[0], device=y.device), y] -= 1.0
                grad_hidden[start:start + chunk] = (probs.to(compute_dtype) @ w).to(hidden.dtype)
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), None, None, None, None


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    """Sum of the next-token cross-entropy over the positions whose label is not IGNORE.

    Args:
        hidden: final hidden states (batch, seq, hidden), after the model's last norm.
        weight: the output head's weight (vocab, hidden); frozen (its gradient is not computed).
        labels: (batch, seq) token ids, IGNORE where no loss; position t's logits predict labels[t + 1].
        chunk: loss tokens per chunk (at most chunk x vocab fp32 logits exist at once).

    Returns:
        A 0-d fp32 tensor: the summed loss (divide by the loss-token count for the mean), zero without
        any loss token. Compute dtype: the autocast dtype when autocast is on, else the weight's.
    """
    if weight.requires_grad:
        raise ValueError("chunked_lm_loss computes no gradient for the head's weight; use the plain loss")
    targets = labels[:, 1:]
    keep = targets != IGNORE
    rows = hidden[:, :-1][keep]  # only positions that carry loss: no logits anywhere else
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    if rows.shape[0] == 0:
        return hidden.sum() * 0.0  # keeps the graph connected, as the plain loss's 0 would
    return _ChunkedLinearCE.apply(rows, weight, targets[keep], max(1, int(chunk)), dtype)


def head_for_chunked_loss(model) -> torch.nn.Linear | None:
    """The output head of ``model`` when the chunked loss computes exactly what its forward would.

    That needs a plain, bias-free nn.Linear head with a frozen weight and no logit post-processing
    (Gemma's soft-capping, Cohere's or Granite's logit scaling); anything else gets the plain loss (None).
    """
    inner = model
    while hasattr(inner, "module"):  # DDP / FSDP wrappers
        inner = inner.module
    if hasattr(inner, "get_base_model"):  # PEFT: LoRA layers are injected in place
        if getattr(getattr(inner, "active_peft_config", None), "is_prompt_learning", False):
            return None  # virtual tokens shift the positions
        inner = inner.get_base_model()
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    config = getattr(inner, "config", None)
    post = any(getattr(config, name, None) not in (None, 1, 1.0)
               for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    if type(head) is not torch.nn.Linear or head.bias is not None or head.weight.requires_grad or post:
        return None
    return head


def chunked_model_loss(model, inputs: dict, head: torch.nn.Linear, chunk: int) -> torch.Tensor:
    """The summed next-token loss of ``model`` on ``inputs`` (with ``labels``) without whole logits: the model
    stops at its last hidden states (``logits_to_keep`` empty) and ``chunked_lm_loss`` makes the logits through
    ``head`` (from ``head_for_chunked_loss``) ``chunk`` tokens at a time. The outputs go out of scope here."""
    labels = inputs["labels"]
    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, output_hidden_states=True,
                    logits_to_keep=torch.empty(0, dtype=torch.long, device=labels.device))
    return chunked_lm_loss(outputs.hidden_states[-1], head.weight, labels, chunk)


def chunked_loss_bytes(vocab: int, hidden: int, loss_tokens: int, chunk: int, c_bytes: int) -> tuple[float, float]:
    """(forward, backward) bytes of the chunked loss, the counterpart of activations.logits.

    Forward: one chunk's fp32 logits and the fp32 temporary logsumexp makes beside them (8 B an element;
    the compute-dtype product before the upcast and the probabilities' cast back are smaller), plus the
    gathered loss rows and their gradient (loss tokens x hidden each). Backward: the stored gradient, its
    scaled copy and the scatter into (tokens, hidden).
    """
    rows = min(chunk, loss_tokens)
    forward = rows * vocab * 8 + 2 * loss_tokens * hidden * c_bytes
    backward = 3 * loss_tokens * hidden * c_bytes
    return float(forward), float(backward)


# TRL's chunked log-prob head (trl/kernels/chunked_logprob.py, trl 1.16): tiles of this many tokens by this many
# vocabulary columns; the tile buffer is allocated at full width even when the vocabulary is narrower
TRL_TOKEN_TILE = 4096
TRL_VOCAB_TILE = 32768


def trl_logprob_bytes(vocab: int, hidden: int, tokens: int, c_bytes: int, device: str) -> tuple[float, float]:
    """(forward, backward) bytes of the log-probabilities TRL's DPO, KTO and GRPO trainers compute through its fused
    LM head (never the whole logits): the counterpart of activations.logits for those objectives.

    Both passes hold one [min(tokens, 4096), 32768] tile buffer in the compute dtype. On a GPU a Triton kernel
    folds each tile in place; on a CPU the same fold is plain torch ops, whose temporaries over the tile's
    real columns are counted from TRL's code: the forward's scaled tile, exp and product (3 fp32) and its
    before-target mask (bool); the backward's scaled tile, z, log p, p, the gradient, the one-hot as float and
    the difference (7 fp32) and the one-hot (bool). Backward also holds the fp32 gradient of the hidden states.
    """
    rows = min(tokens, TRL_TOKEN_TILE)
    buffer = rows * TRL_VOCAB_TILE * c_bytes
    cells = rows * min(vocab, TRL_VOCAB_TILE)
    cpu = device != "cuda"
    forward = buffer + (cells * (3 * 4 + 1) if cpu else 0)
    backward = buffer + (cells * (7 * 4 + 1) if cpu else 0) + tokens * hidden * 4
    return float(forward), float(backward)
