"""PEFT tuners that train a few vectors over frozen random projections or a shared bank: VeRA, PVeRA,
RandLoRA, VBLoRA, UniLoRA and TinyLoRA. The projections come from a seed; the result stores them (or
the seed) so it loads anywhere. Knob names, defaults and ranges follow PEFT's config fields (peft 0.21)."""

from __future__ import annotations

from studio.method_defs.tuners_common import common_divisor, peft_kwargs, targets_knob, tuner
from studio.method_api import Knob, register

_T = targets_knob()
_SEED = "seed of the frozen random projections"


def _dropout(field: str) -> Knob:
    return Knob(field, float, 0.0, "dropout on the adapter input", min=0.0, max=0.9, step=0.01)


register(tuner("vera", "VeRA", "one pair of frozen random matrices shared by all layers; only two scaling "
               "vectors per layer train", "VeraConfig", (
                   Knob("r", int, 256, "rank of the shared random matrices (higher than LoRA's: they do not train)",
                        min=1, max=4096, step=1),
                   Knob("d_initial", float, 0.1, "starting value of the d scaling vector", min=0.0, max=10.0),
                   Knob("projection_prng_key", int, 0, _SEED, min=0, max=2**31 - 1, step=1),
                   _dropout("vera_dropout"), _T),
               learning_rate=2e-2))

register(tuner("pvera", "PVeRA", "VeRA with a learned probabilistic scaling (mean and spread per layer)",
               "PveraConfig", (
                   Knob("r", int, 256, "rank of the shared random matrices", min=1, max=4096, step=1),
                   Knob("d_initial", float, 0.1, "starting value of the d scaling vector", min=0.0, max=10.0),
                   Knob("projection_prng_key", int, 0, _SEED, min=0, max=2**31 - 1, step=1),
                   _dropout("pvera_dropout"), _T),
               learning_rate=1e-3))

register(tuner("randlora", "RandLoRA", "full-rank update from many frozen random low-rank bases; only their "
               "mixing vectors train", "RandLoraConfig", (
                   Knob("r", int, 32, "rank of each random basis (fewer bases, fewer weights, as r grows)",
                        min=1, max=4096, step=1),
                   Knob("randlora_alpha", float, 640.0, "scale of the update, usually 20 x r", min=0.0, max=1e5),
                   Knob("sparse", bool, False, "sparse random bases (ternary; same speed here)"),
                   Knob("projection_prng_key", int, 0, _SEED, min=0, max=2**31 - 1, step=1),
                   _dropout("randlora_dropout"), _T),
               learning_rate=2e-4))


def _vblora(values: dict, model, names: list[str]) -> dict:
    out = peft_kwargs(values, model, names)
    # 0: the largest length up to 256 that divides every adapted layer's sizes, as PEFT requires
    out["vector_length"] = values["vector_length"] or common_divisor(model, names, 256)
    return out


register(tuner("vblora", "VBLoRA", "LoRA whose rows are top-k mixtures from one shared vector bank",
               "VBLoRAConfig", (
                   Knob("r", int, 4, "rank of the update", min=1, max=1024, step=1),
                   Knob("num_vectors", int, 256, "vectors in the shared bank", min=1, max=65536, step=1),
                   Knob("vector_length", int, 0, "length of each vector; must divide the layers' sizes (0: the "
                        "largest that does, up to 256)", min=0, max=4096, step=1),
                   Knob("topk", int, 2, "vectors mixed per row (2 works best per the paper)", min=1, max=64, step=1),
                   _dropout("vblora_dropout"), _T),
               learning_rate=1e-3, build=_vblora))

register(tuner("unilora", "UniLoRA", "every LoRA weight indexes into one small shared vector: the fewest weights",
               "UniLoraConfig", (
                   Knob("r", int, 4, "rank of the update it stands for", min=1, max=1024, step=1),
                   Knob("theta_d_length", int, 256, "length of the shared trained vector", min=1, max=2**24, step=1),
                   Knob("proj_seed", int, 42, "seed of the fixed index assignment", min=0, max=2**31 - 1, step=1),
                   _dropout("unilora_dropout"), _T),
               learning_rate=2e-3))

register(tuner("tinylora", "TinyLoRA", "a frozen SVD of each weight steered by a tiny trained vector per group",
               "TinyLoraConfig", (
                   Knob("r", int, 2, "rank of the frozen SVD part", min=1, max=256, step=1),
                   Knob("u", int, 64, "length of the trained vector per group", min=1, max=65536, step=1),
                   Knob("weight_tying", float, 0.0, "share of the adapted layers tying one vector (0: none, 1: all)",
                        min=0.0, max=1.0, step=0.05),
                   Knob("projection_seed", int, 42, _SEED, min=0, max=2**31 - 1, step=1),
                   _dropout("tinylora_dropout"), _T),
               learning_rate=1e-3))
