"""Freeze tuning: only the top N transformer blocks (all of them, or chosen parts) and/or the LM head train."""

from __future__ import annotations

from studio import targets as tg
from studio.config import ConfigError
from studio.method_defs._weights import WEIGHTS_STORAGE, freeze_all
from studio.methods import Knob, Method, register

PARTS = ("all", "attention", "mlp", "norms")

KNOBS = (
    Knob("top_blocks", int, 2, "the last N transformer blocks train (more than the model has means all)",
         min=0, max=1024, step=1),
    Knob("parts", list, ["all"], "which parts of those blocks train: all, attention, mlp, norms", choices=PARTS),
    Knob("train_head", bool, False, "the LM head trains too (on tied models that is the shared embedding matrix)"),
)


def _wanted(part: str, parts: list[str]) -> bool:
    return "all" in parts or part in parts


def _apply(model, spec, ctx):
    v = FREEZE.values(spec)
    if v["top_blocks"] == 0 and not v["train_head"]:
        raise ConfigError("freeze: nothing would train; set method.top_blocks above 0 or method.train_head: true")
    freeze_all(model)
    blocks = tg.blocks(model)
    for block in blocks[len(blocks) - min(v["top_blocks"], len(blocks)):]:
        for name, child in block.named_children():
            if _wanted(tg.block_part(name, child), v["parts"]):
                child.requires_grad_(True)
    if v["train_head"]:
        model.get_output_embeddings().weight.requires_grad_(True)
    if ctx.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _trainable(arch, spec) -> int:
    v = FREEZE.values(spec)
    sizes = tg.block_part_sizes(arch)
    per_block = sum(n for part, n in sizes.items() if _wanted(part, v["parts"]))
    head = arch.vocab_size * arch.hidden_size if v["train_head"] else 0
    return min(v["top_blocks"], arch.num_layers) * per_block + head


FREEZE = register(Method(
    name="freeze", title="Freeze tuning",
    summary="only the top blocks (and optionally the head) train; the rest frozen",
    knobs=KNOBS, apply=_apply, trainable=_trainable, learning_rate=5e-5,
    merge_refusal="freeze tuning changed the top blocks' weights directly: there is no adapter to merge",
    **WEIGHTS_STORAGE,
))
