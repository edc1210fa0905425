"""Which layers a method can target, discovered from a loaded model or, without weights, from model facts.

Groups: 'attention', 'mlp' and 'all-linear'. Names are the short module names PEFT matches on
(``q_proj``, GPT-2's ``c_attn``...). Per-model facts are data (``ARCH_TARGETS``), not if/elif chains.
"""

from __future__ import annotations

import torch

__all__ = ["ARCH_TARGETS", "GROUPS", "discover", "for_arch", "expand", "linear_shapes", "bias_total",
           "block_part_sizes", "norm_weight_total", "blocks", "block_part", "is_norm"]

# 'ffn-out': the MLP's down projection (input = the MLP's hidden size); 'ia3': what the IA3 paper rescales
# (keys, values and the down projection's input).
GROUPS = ("attention", "mlp", "all-linear", "ffn-out", "ia3")

# Short module names per model family, as the loaded model names them.
ARCH_TARGETS: dict[str, dict[str, list[str]]] = {
    "llama": {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"], "mlp": ["gate_proj", "up_proj", "down_proj"],
              "ffn-out": ["down_proj"], "ia3": ["k_proj", "v_proj", "down_proj"]},
    # GPT-2 computes q, k and v in one Conv1D, so IA3 rescales all three there
    "gpt2": {"attention": ["c_attn", "attn.c_proj"], "mlp": ["c_fc", "mlp.c_proj"],
             "ffn-out": ["mlp.c_proj"], "ia3": ["c_attn", "mlp.c_proj"]},
}
for _alias in ("mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "granite"):
    ARCH_TARGETS[_alias] = ARCH_TARGETS["llama"]

_ATTENTION_HINTS = ("attn", "attention")
_MLP_HINTS = ("mlp", "ffn", "feed_forward")
_SKIP = ("lm_head", "embed", "wte", "wpe", "score", "classifier")


def _is_linear(module: torch.nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, (torch.nn.Linear, Conv1D)):
        return True
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def discover(model: torch.nn.Module) -> dict[str, list[str]]:
    """Linear and Conv1D layers inside the blocks, grouped; names are unique suffixes PEFT matches on."""
    found: dict[str, list[str]] = {"attention": [], "mlp": []}
    for full_name, module in model.named_modules():
        if not _is_linear(module) or any(s in full_name for s in _SKIP):
            continue
        parts = full_name.split(".")
        parent, leaf = (parts[-2] if len(parts) > 1 else ""), parts[-1]
        group = "attention" if any(h in parent for h in _ATTENTION_HINTS) else (
            "mlp" if any(h in parent for h in _MLP_HINTS) else "mlp")
        # the same leaf name in both groups (GPT-2's c_proj) is qualified by its parent
        name = leaf
        other = "mlp" if group == "attention" else "attention"
        if any(n.split(".")[-1] == leaf for n in found[other]) or _leaf_in_both(model, leaf):
            name = f"{parent}.{leaf}"
        if name not in found[group]:
            found[group].append(name)
    found["all-linear"] = found["attention"] + found["mlp"]
    found["ffn-out"] = [n for n in found["mlp"] if _widest_input(model, n)]
    known = ARCH_TARGETS.get(getattr(getattr(model, "config", None), "model_type", ""), {}).get("ia3")
    found["ia3"] = [n for n in known if n in found["all-linear"]] if known else (
        found["attention"] + found["ffn-out"])
    return found


def _in_out(module: torch.nn.Module) -> tuple[int, int]:
    if hasattr(module, "in_features"):
        return module.in_features, module.out_features
    return module.weight.shape[0], module.weight.shape[1]  # transformers' Conv1D stores (in, out)


def _widest_input(model: torch.nn.Module, name: str) -> bool:
    # the down projection reads the MLP's wide hidden state and writes the narrower residual stream
    for full_name, module in model.named_modules():
        if (full_name == name or full_name.endswith("." + name)) and _is_linear(module):
            i, o = _in_out(module)
            return i > o
    return False


def _leaf_in_both(model: torch.nn.Module, leaf: str) -> bool:
    parents = {n.split(".")[-2] for n, m in model.named_modules() if n.endswith("." + leaf) and _is_linear(m)}
    return len(parents) > 1


def for_arch(model_type: str) -> dict[str, list[str]]:
    """Target groups for a model type without loading it (falls back to the Llama names)."""
    base = ARCH_TARGETS.get(model_type, ARCH_TARGETS["llama"])
    return {"attention": list(base["attention"]), "mlp": list(base["mlp"]),
            "all-linear": base["attention"] + base["mlp"], "ffn-out": list(base["ffn-out"]),
            "ia3": list(base["ia3"])}


def expand(targets: list[str], groups: dict[str, list[str]]) -> list[str]:
    """Replace group names in ``targets`` by their members, keeping order and dropping repeats."""
    out: list[str] = []
    for t in targets:
        for name in groups.get(t, [t]):
            if name not in out:
                out.append(name)
    return out


# --- shapes from the architecture alone (no weights), for trainable-parameter counts ---------------------

def linear_shapes(arch) -> dict[str, tuple[int, int, int]]:
    """Every block linear layer by its target name: (in_features, out_features, bias size)."""
    h, q = arch.hidden_size, arch.num_heads * arch.head_dim
    kv, ff = arch.num_kv_heads * arch.head_dim, arch.intermediate_size
    qkv_b, out_b, mlp_b = arch.attention_bias, arch.out_bias, arch.mlp_bias
    shapes = {
        "q_proj": (h, q, q * qkv_b), "k_proj": (h, kv, kv * qkv_b), "v_proj": (h, kv, kv * qkv_b),
        "o_proj": (q, h, h * out_b), "gate_proj": (h, ff, ff * mlp_b), "up_proj": (h, ff, ff * mlp_b),
        "down_proj": (ff, h, h * mlp_b),
        "c_attn": (h, q + 2 * kv, (q + 2 * kv) * qkv_b), "attn.c_proj": (q, h, h * out_b),
        "c_fc": (h, ff, ff * mlp_b), "mlp.c_proj": (ff, h, h * mlp_b),
    }
    names = for_arch(arch.model_type)["all-linear"]
    return {n: shapes[n] for n in names}


def block_part_sizes(arch) -> dict[str, int]:
    """Parameters of one block by part: attention, mlp (weights and biases) and norms."""
    shapes = linear_shapes(arch)
    groups = for_arch(arch.model_type)
    part = lambda g: sum(i * o + b for i, o, b in (shapes[n] for n in groups[g]))  # noqa: E731
    norms = 2 * arch.hidden_size * (2 if arch.norm_bias else 1)
    return {"attention": part("attention"), "mlp": part("mlp"), "norms": norms}


def bias_total(arch) -> int:
    """Every bias in the model: linear layers of all blocks plus the norms' biases (LayerNorm has them)."""
    linear = sum(b for _, _, b in linear_shapes(arch).values()) * arch.num_layers
    norms = (2 * arch.num_layers + 1) * arch.hidden_size if arch.norm_bias else 0
    return linear + norms


def norm_weight_total(arch) -> int:
    """The norms' scale weights: two per block plus the final norm."""
    return (2 * arch.num_layers + 1) * arch.hidden_size


# --- the blocks of a loaded model --------------------------------------------------------------------------

_BLOCK_PARTS = {"attention": _ATTENTION_HINTS, "mlp": _MLP_HINTS}


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks, bottom to top: the longest ModuleList in the model."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ValueError("the model has no list of transformer blocks")
    return list(max(lists, key=len))


def block_part(child_name: str, child: torch.nn.Module) -> str:
    """Which part of a block a direct child belongs to: 'attention', 'mlp' or 'norms'."""
    if is_norm(child):  # before the name hints: Llama's 'post_attention_layernorm' is a norm
        return "norms"
    for part, hints in _BLOCK_PARTS.items():
        if any(h in child_name for h in hints):
            return part
    return "norms"


def is_norm(module: torch.nn.Module) -> bool:
    """LayerNorm, RMSNorm and their model-specific variants (matched by class name)."""
    return isinstance(module, torch.nn.LayerNorm) or "norm" in type(module).__name__.lower()
