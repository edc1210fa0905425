"""Which layers a method can target, discovered from the model itself: its Linear and Conv1D layers.

Groups: 'attention', 'mlp' and 'all-linear' (plus 'ffn-out' and 'ia3'). Names are the short module names
PEFT matches on (``q_proj``, Phi-3's fused ``qkv_proj``, GPT-2's ``c_attn``...).

With a loaded model, ``discover(model)`` reads them. Without weights, ``layout(arch)`` builds a copy of the
model on the meta device (shapes only, no memory; ``studio.meta_model``) from a config carrying the
architecture's facts, and reads the names, the layers' shapes and the parts' sizes from it, once per
architecture. Only a model type that cannot be built that way (remote code, not a causal LM) falls back
to the names in ``ARCH_TARGETS`` and to shapes computed from the architecture's numbers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from studio import meta_model as meta
from studio.config import ConfigError

__all__ = ["ARCH_TARGETS", "GROUPS", "Layout", "discover", "layout", "for_arch", "expand",
           "linear_shapes", "bias_total", "block_part_sizes", "norm_weight_total", "blocks", "block_part",
           "is_norm", "resolve_layers", "resolve_modules", "module_names"]

# 'ffn-out': the MLP's down projection (input = the MLP's hidden size); 'ia3': what the IA3 paper rescales
# (keys, values and the down projection's input).
GROUPS = ("attention", "mlp", "all-linear", "ffn-out", "ia3")

_LLAMA = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"], "mlp": ["gate_proj", "up_proj", "down_proj"],
          "ffn-out": ["down_proj"], "ia3": ["k_proj", "v_proj", "down_proj"]}
# Short module names per model family, as the loaded model names them. Discovery finds the names by
# itself; the table says what IA3 rescales, and names the layers of a model that cannot be built on meta.
ARCH_TARGETS: dict[str, dict[str, list[str]]] = {
    "llama": _LLAMA,
    # GPT-2 computes q, k and v in one Conv1D, so IA3 rescales all three there
    "gpt2": {"attention": ["c_attn", "attn.c_proj"], "mlp": ["c_fc", "mlp.c_proj"],
             "ffn-out": ["mlp.c_proj"], "ia3": ["c_attn", "mlp.c_proj"]},
    # Phi-3 fuses q, k, v into qkv_proj and the gate and up projections into gate_up_proj
    "phi3": {"attention": ["qkv_proj", "o_proj"], "mlp": ["gate_up_proj", "down_proj"],
             "ffn-out": ["down_proj"], "ia3": ["qkv_proj", "down_proj"]},
}
for _alias in ("mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "granite"):
    ARCH_TARGETS[_alias] = _LLAMA

_ATTENTION_HINTS = ("attn", "attention")
_MLP_HINTS = ("mlp", "ffn", "feed_forward")
_SKIP = ("lm_head", "embed", "wte", "wpe", "score", "classifier")


def _is_linear(module: torch.nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, (torch.nn.Linear, Conv1D)):
        return True
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def _matches(full_name: str, name: str) -> bool:
    # PEFT's rule: the whole dotted name, or its end after a dot
    return full_name == name or full_name.endswith("." + name)


def discover(model: torch.nn.Module) -> dict[str, list[str]]:
    """Linear and Conv1D layers inside the blocks, grouped; names are unique suffixes PEFT matches on."""
    linears = [(n, m) for n, m in model.named_modules() if _is_linear(m)]
    parents: dict[str, set[str]] = {}
    for full_name, _ in linears:
        parts = full_name.split(".")
        parents.setdefault(parts[-1], set()).add(parts[-2] if len(parts) > 1 else "")
    found: dict[str, list[str]] = {"attention": [], "mlp": []}
    first: dict[str, torch.nn.Module] = {}
    for full_name, module in linears:
        if any(s in full_name for s in _SKIP):
            continue
        parts = full_name.split(".")
        parent, leaf = (parts[-2] if len(parts) > 1 else ""), parts[-1]
        group = "attention" if any(h in parent for h in _ATTENTION_HINTS) else "mlp"
        # the same leaf name under two parents (GPT-2's c_proj) is qualified by its parent
        name = f"{parent}.{leaf}" if len(parents[leaf]) > 1 else leaf
        if name not in found[group]:
            found[group].append(name)
            first[name] = module
    found["all-linear"] = found["attention"] + found["mlp"]
    # the down projection reads the MLP's wide hidden state and writes the narrower residual stream
    found["ffn-out"] = [n for n in found["mlp"] if _in_out(first[n])[0] > _in_out(first[n])[1]]
    known = ARCH_TARGETS.get(getattr(getattr(model, "config", None), "model_type", ""), {}).get("ia3")
    found["ia3"] = [n for n in known if n in found["all-linear"]] if known else (
        found["attention"] + found["ffn-out"])
    return found


def _in_out(module: torch.nn.Module) -> tuple[int, int]:
    if hasattr(module, "in_features"):
        return module.in_features, module.out_features
    return module.weight.shape[0], module.weight.shape[1]  # transformers' Conv1D stores (in, out)


def resolve_layers(model: torch.nn.Module, wanted: list[str], key: str = "method.targets") -> list[str]:
    """Layer names for PEFT, groups expanded from what the model really has (``key`` names the setting)."""
    found = discover(model)
    names = expand(wanted, found)
    unknown = [n for n in names if n not in found["all-linear"]]
    if unknown:
        raise ConfigError(f"{key}: {', '.join(unknown)} not in this model "
                          f"(it has: {', '.join(found['all-linear'])}; or use attention / mlp / all-linear)")
    return names


def module_names(model: torch.nn.Module) -> list[str]:
    """The short names (last part) of the modules that hold parameters, in model order: lm_head, norm, mlp..."""
    out: list[str] = []
    for full_name, module in model.named_modules():
        leaf = full_name.split(".")[-1]
        if leaf and not leaf.isdigit() and leaf not in out and next(module.parameters(), None) is not None:
            out.append(leaf)
    return out


def resolve_modules(model: torch.nn.Module, wanted: list[str], key: str = "method.modules") -> list[str]:
    """Full names of the modules ``wanted`` picks (a name or the end of a dotted name: lm_head, layers.3.mlp)."""
    names = [n for n, m in model.named_modules() if n and next(m.parameters(), None) is not None]
    picked, unknown = [], []
    for want in wanted:
        hits = [n for n in names if _matches(n, want)]
        if not hits:
            unknown.append(want)
        picked += [n for n in hits if n not in picked]
    if unknown:
        raise ConfigError(f"{key}: {', '.join(unknown)} not in this model (it has: {', '.join(module_names(model))}; "
                          "a name also picks the end of a dotted path, e.g. layers.0.mlp for one block's MLP)")
    return picked


def expand(targets: list[str], groups: dict[str, list[str]]) -> list[str]:
    """Replace group names in ``targets`` by their members, keeping order and dropping repeats."""
    out: list[str] = []
    for t in targets:
        for name in groups.get(t, [t]):
            if name not in out:
                out.append(name)
    return out


# --- without weights: a meta-device copy built from the architecture -------------------------------------

@dataclass(frozen=True)
class Layout:
    """One architecture's layers as the model names them, and the sizes parameter counts need."""

    groups: dict  # group -> target names (attention, mlp, all-linear, ffn-out, ia3)
    shapes: dict  # target name -> (in_features, out_features, bias size) in one block
    parts: dict  # parameters of one block by part: attention, mlp, norms
    biases: int  # every bias in the model
    norm_weights: int  # every norm's scale weight
    source: str  # 'model' (read from a meta-device copy) or 'table' (ARCH_TARGETS and formulas)


@functools.lru_cache(maxsize=64)
def layout(arch) -> Layout:
    """``arch``'s layers and sizes, read from its meta-device copy (the table where it cannot be built)."""
    model = meta.for_arch(arch)
    try:
        return _read_layout(model) if model is not None else _table_layout(arch)
    except ValueError:  # no list of blocks to read per-block sizes from
        return _table_layout(arch)


def _read_layout(model: torch.nn.Module) -> Layout:
    groups = discover(model)
    block = blocks(model)[0]
    inside = [(n, m) for n, m in block.named_modules() if _is_linear(m)]
    shapes = {}
    for name in groups["all-linear"]:
        module = next((m for n, m in inside if _matches(n, name)), None)
        if module is None:  # a layer outside the blocks: counts per block leave it out
            continue
        bias = module.bias.numel() if getattr(module, "bias", None) is not None else 0
        shapes[name] = (*_in_out(module), bias)
    parts = {"attention": 0, "mlp": 0, "norms": 0}
    for name, child in block.named_children():
        parts[block_part(name, child)] += sum(p.numel() for p in child.parameters())
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    norms = sum(m.weight.numel() for m in model.modules() if is_norm(m) and getattr(m, "weight", None) is not None)
    return Layout(groups, shapes, parts, biases, norms, "model")


def for_arch(arch) -> dict[str, list[str]]:
    """Target groups of ``arch``'s model, without loading it."""
    return {g: list(names) for g, names in layout(arch).groups.items()}


def linear_shapes(arch) -> dict[str, tuple[int, int, int]]:
    """Every block linear layer by its target name: (in_features, out_features, bias size)."""
    return dict(layout(arch).shapes)


def block_part_sizes(arch) -> dict[str, int]:
    """Parameters of one block by part: attention, mlp (weights and biases) and norms."""
    return dict(layout(arch).parts)


def bias_total(arch) -> int:
    """Every bias in the model: linear layers of all blocks plus the norms' biases (LayerNorm has them)."""
    return layout(arch).biases


def norm_weight_total(arch) -> int:
    """The norms' scale weights: two per block plus the final norm."""
    return layout(arch).norm_weights


# --- the fallback: names from the table, shapes from the architecture's numbers ----------------------------

def _table_layout(arch) -> Layout:
    base = ARCH_TARGETS.get(arch.model_type, _LLAMA)
    groups = {"attention": list(base["attention"]), "mlp": list(base["mlp"]),
              "all-linear": base["attention"] + base["mlp"], "ffn-out": list(base["ffn-out"]),
              "ia3": list(base["ia3"])}
    shapes = _formula_shapes(arch, groups["all-linear"])
    part = lambda g: sum(i * o + b for i, o, b in (shapes[n] for n in groups[g]))  # noqa: E731
    norms = 2 * arch.hidden_size * (2 if arch.norm_bias else 1)
    linear_biases = sum(b for _, _, b in shapes.values()) * arch.num_layers
    norm_biases = (2 * arch.num_layers + 1) * arch.hidden_size if arch.norm_bias else 0
    return Layout(groups, shapes, {"attention": part("attention"), "mlp": part("mlp"), "norms": norms},
                  linear_biases + norm_biases, (2 * arch.num_layers + 1) * arch.hidden_size, "table")


def _formula_shapes(arch, names: list[str]) -> dict[str, tuple[int, int, int]]:
    h, q = arch.hidden_size, arch.num_heads * arch.head_dim
    kv, ff = arch.num_kv_heads * arch.head_dim, arch.intermediate_size
    qkv_b, out_b, mlp_b = arch.attention_bias, arch.out_bias, arch.mlp_bias
    shapes = {
        "q_proj": (h, q, q * qkv_b), "k_proj": (h, kv, kv * qkv_b), "v_proj": (h, kv, kv * qkv_b),
        "o_proj": (q, h, h * out_b), "gate_proj": (h, ff, ff * mlp_b), "up_proj": (h, ff, ff * mlp_b),
        "down_proj": (ff, h, h * mlp_b), "qkv_proj": (h, q + 2 * kv, (q + 2 * kv) * qkv_b),
        "gate_up_proj": (h, 2 * ff, 2 * ff * mlp_b),
        "c_attn": (h, q + 2 * kv, (q + 2 * kv) * qkv_b), "attn.c_proj": (q, h, h * out_b),
        "c_fc": (h, ff, ff * mlp_b), "mlp.c_proj": (ff, h, h * mlp_b),
    }
    return {n: shapes[n] for n in names}


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
