"""Freeze tuning: only the top N transformer blocks (all of them, or chosen parts), the LM head and/or a
listed set of modules train; everything else stays frozen."""

from __future__ import annotations

import functools

from studio import meta_model
from studio import targets as tg
from studio.config import ConfigError
from studio.method_defs.weights_common import WEIGHTS_STORAGE, freeze_all
from studio.method_api import Knob, Method, register

PARTS = ("all", "attention", "mlp", "norms")

KNOBS = (
    Knob("top_blocks", int, 2, "the last N transformer blocks train (more than the model has means all)",
         min=0, max=1024, step=1),
    Knob("parts", list, ["all"], "which parts of those blocks train: all, attention, mlp, norms", choices=PARTS),
    Knob("train_head", bool, False, "the LM head trains too (on tied models that is the shared embedding matrix)"),
    Knob("modules", list, [], "these modules train as well, wherever they are: names or name ends "
         "(lm_head, norm, layers.0, mlp, q_proj)", picks="modules"),
)


def _wanted(part: str, parts: list[str]) -> bool:
    return "all" in parts or part in parts


def _chosen(model, v: dict) -> dict:
    """The parameters these knob values train, by identity (a tied weight once)."""
    chosen = {}
    blocks = tg.blocks(model)
    for block in blocks[len(blocks) - min(v["top_blocks"], len(blocks)):]:
        for name, child in block.named_children():
            if _wanted(tg.block_part(name, child), v["parts"]):
                chosen.update((id(p), p) for p in child.parameters())
    if v["train_head"]:
        head = model.get_output_embeddings().weight
        chosen[id(head)] = head
    picked = set(tg.resolve_modules(model, v["modules"]))
    for name, module in model.named_modules():
        if name in picked:
            chosen.update((id(p), p) for p in module.parameters())
    return chosen


def _apply(model, spec, ctx):
    v = FREEZE.values(spec)
    if v["top_blocks"] == 0 and not v["train_head"] and not v["modules"]:
        raise ConfigError("freeze: nothing would train; set method.top_blocks above 0, method.train_head: true "
                          "or list method.modules")
    chosen = _chosen(model, v)  # resolved before anything changes: an unknown module name leaves the model as it was
    freeze_all(model)
    for p in chosen.values():
        p.requires_grad_(True)
    if ctx.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _trainable(arch, spec) -> int:
    v = FREEZE.values(spec)
    if v["modules"]:
        return _listed_count(arch, v["top_blocks"], tuple(v["parts"]), v["train_head"], tuple(v["modules"]))
    sizes = tg.block_part_sizes(arch)
    per_block = sum(n for part, n in sizes.items() if _wanted(part, v["parts"]))
    head = arch.vocab_size * arch.hidden_size if v["train_head"] else 0
    return min(v["top_blocks"], arch.num_layers) * per_block + head


@functools.lru_cache(maxsize=256)
def _listed_count(arch, top_blocks: int, parts: tuple, train_head: bool, modules: tuple) -> int:
    # listed modules may overlap the top blocks or the head: count the union on a meta-device copy
    model = meta_model.for_arch(arch)
    if model is None:
        raise ConfigError(f"method.modules: {arch.model_type} cannot be built without its weights here, so the "
                          "listed modules cannot be counted before loading; use top_blocks / train_head")
    v = {"top_blocks": top_blocks, "parts": list(parts), "train_head": train_head, "modules": list(modules)}
    return sum(p.numel() for p in _chosen(model, v).values())


FREEZE = register(Method(
    name="freeze", title="Freeze tuning",
    summary="only the top blocks, the head and/or listed modules train; the rest frozen",
    knobs=KNOBS, apply=_apply, trainable=_trainable, learning_rate=5e-5,
    merge_refusal="freeze tuning changed the chosen weights directly: there is no adapter to merge",
    **WEIGHTS_STORAGE,
))
