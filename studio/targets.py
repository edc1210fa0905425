"""Which layers a method can target, discovered from a loaded model or, without weights, from model facts.

Groups: 'attention', 'mlp' and 'all-linear'. Names are the short module names PEFT matches on
(``q_proj``, GPT-2's ``c_attn``...). Per-model facts are data (``ARCH_TARGETS``), not if/elif chains.
"""

from __future__ import annotations

import torch

__all__ = ["ARCH_TARGETS", "GROUPS", "discover", "for_arch", "expand"]

GROUPS = ("attention", "mlp", "all-linear")

# Short module names per model family, as the loaded model names them.
ARCH_TARGETS: dict[str, dict[str, list[str]]] = {
    "llama": {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"], "mlp": ["gate_proj", "up_proj", "down_proj"]},
    "gpt2": {"attention": ["c_attn", "attn.c_proj"], "mlp": ["c_fc", "mlp.c_proj"]},
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
    return found


def _leaf_in_both(model: torch.nn.Module, leaf: str) -> bool:
    parents = {n.split(".")[-2] for n, m in model.named_modules() if n.endswith("." + leaf) and _is_linear(m)}
    return len(parents) > 1


def for_arch(model_type: str) -> dict[str, list[str]]:
    """Target groups for a model type without loading it (falls back to the Llama names)."""
    base = ARCH_TARGETS.get(model_type, ARCH_TARGETS["llama"])
    return {"attention": list(base["attention"]), "mlp": list(base["mlp"]),
            "all-linear": base["attention"] + base["mlp"]}


def expand(targets: list[str], groups: dict[str, list[str]]) -> list[str]:
    """Replace group names in ``targets`` by their members, keeping order and dropping repeats."""
    out: list[str] = []
    for t in targets:
        for name in groups.get(t, [t]):
            if name not in out:
                out.append(name)
    return out
