"""PEFT tuners that add a low-rank or factored update beside the chosen layers, each a LoRA relative:
LoHa and LoKr (LyCORIS: Hadamard and Kronecker products), GraLoRA, HiRA, MiSS, DeLoRA, GLoRA, DEFT, PEANuT
and Lily. Knob names, defaults and ranges follow PEFT's config fields (peft 0.21)."""

from __future__ import annotations

from studio.method_defs.tuners_common import targets_knob, tuner
from studio.method_api import Knob, register

_T = targets_knob()
_DROP = "dropout on the adapter input"


def _rank(default: int, what: str = "rank of the update: capacity and size grow with it") -> Knob:
    return Knob("r", int, default, what, min=1, max=1024, step=1)


# LyCORIS: the update is a Hadamard (LoHa) or Kronecker (LoKr) product of small factors
_LYCORIS = (
    _rank(8), Knob("alpha", float, 8.0, "scale of the update (alpha / r)", min=0.0, max=4096.0), _T,
    Knob("rank_dropout", float, 0.0, "dropout over the rank dimension in training", min=0.0, max=0.9, step=0.01),
    Knob("module_dropout", float, 0.0, "chance of switching a whole adapted layer off per step in training",
         min=0.0, max=0.9, step=0.01),
)
register(tuner("loha", "LoHa", "Hadamard product of two low-rank pairs: rank r^2 from 2x LoRA's weights (LyCORIS)",
               "LoHaConfig", _LYCORIS, learning_rate=5e-4, linear_only=True))
register(tuner("lokr", "LoKr", "Kronecker product of a small and a low-rank factor: very few weights (LyCORIS)",
               "LoKrConfig", _LYCORIS + (
                   Knob("decompose_both", bool, False, "also factor the left Kronecker matrix into low rank"),
                   Knob("decompose_factor", int, -1, "Kronecker factor size (-1: as near the square root as fits)",
                        min=-1, max=4096, step=1)),
               learning_rate=5e-4, linear_only=True))

register(tuner("gralora", "GraLoRA", "LoRA split into k x k sub-blocks: LoRA's size, more expressive at high rank",
               "GraloraConfig", (
                   _rank(32, "rank; must divide by gralora_k (same size as LoRA of this rank)"),
                   Knob("alpha", float, 64.0, "scale of the update: alpha / (r + hybrid_r)", min=0.0, max=4096.0),
                   Knob("gralora_k", int, 2, "sub-blocks per side; r must divide by it", min=1, max=64, step=1),
                   Knob("hybrid_r", int, 0, "extra rank given to a plain LoRA part (hybrid GraLoRA)", min=0,
                        max=1024, step=1),
                   Knob("gralora_dropout", float, 0.0, _DROP, min=0.0, max=0.9, step=0.01), _T),
               learning_rate=2e-4, checks=lambda v: [] if v["r"] % v["gralora_k"] == 0 else [
                   f"r: {v['r']} does not divide by gralora_k {v['gralora_k']}"]))

register(tuner("hira", "HiRA", "Hadamard product of the frozen weight with a low-rank update: high-rank changes",
               "HiraConfig", (_rank(32), Knob("hira_dropout", float, 0.0, _DROP, min=0.0, max=0.9, step=0.01), _T),
               learning_rate=2e-4))

register(tuner("miss", "MiSS (Bone)", "one shard matrix shared across the weight's blocks: LoRA-like size, "
               "faster to train", "MissConfig", (
                   _rank(64, "shard size along the input features (must divide them)"),
                   Knob("mini_r", int, 1, "shard size along the output features", min=1, max=1024, step=1),
                   Knob("miss_dropout", float, 0.0, _DROP, min=0.0, max=0.9, step=0.01), _T),
               learning_rate=2e-4, linear_only=True))

register(tuner("delora", "DeLoRA", "LoRA with a bounded, normalised update: the change cannot exceed lambda",
               "DeloraConfig", (_rank(8), Knob("delora_lambda", float, 15.0, "upper bound on the update's "
                                               "Frobenius norm (its starting value; it trains)", min=0.0, max=1e4),
                                Knob("module_dropout", float, 0.0, "chance of switching an adapted layer off per "
                                     "step in training", min=0.0, max=0.9, step=0.01), _T),
               learning_rate=1e-3, linear_only=True))

_GLORA_KINDS = ("lora", "vector", "constant", "none")
register(tuner("glora", "GLoRA", "generalised LoRA: learned scale and shift of weights and biases",
               "GloraConfig", (
                   _rank(8),
                   Knob("config_A_B", str, "lora", "form of the weight's scale A and shift B", choices=_GLORA_KINDS),
                   Knob("config_C", str, "lora", "form of C (bias += W0 @ C)", choices=_GLORA_KINDS),
                   Knob("config_D_E", str, "constant", "form of the bias's scale D and shift E",
                        choices=("vector", "constant", "none")), _T),
               learning_rate=2e-4, linear_only=True))

register(tuner("deft", "DEFT", "removes a learned subspace of the weight and injects a new one (residual projection)",
               "DeftConfig", (
                   _rank(8), Knob("decomposition_method", str, "relu", "how the projector is made from P: relu "
                                  "(P relu(P)^T) or qr (orthogonal)", choices=("relu", "qr")),
                   Knob("para", bool, False, "PaRa: only remove the subspace, inject nothing (P trains alone)"),
                   Knob("deft_dropout", float, 0.0, _DROP, min=0.0, max=0.9, step=0.01), _T),
               learning_rate=2e-4))

register(tuner("peanut", "PEANuT", "a small nonlinear network of the weights gives the update: more expressive "
               "than LoRA at the same size", "PeanutConfig", (
                   _rank(32, "hidden size of the adapter network"),
                   Knob("depth", int, 0, "hidden layers between its input and output projections", min=0, max=8,
                        step=1),
                   Knob("act_fn", str, "relu", "activation inside the network", choices=("relu", "gelu", "silu",
                                                                                          "tanh")),
                   Knob("scaling", float, 1.0, "multiplier on the update", min=0.0, max=1000.0), _T),
               learning_rate=2e-4, linear_only=True))

register(tuner("lily", "Lily", "low-rank A per group of layers, a few B shared by all, mixed by a router",
               "LilyConfig", (
                   _rank(32), Knob("stride_A", int, 1, "neighbouring layers that share one A", min=1, max=256,
                                   step=1),
                   Knob("num_B", int, 2, "B adapters shared across all layers", min=1, max=256, step=1),
                   Knob("scaling", float, 1.0, "multiplier on the update", min=0.0, max=1000.0), _T),
               learning_rate=2e-4, linear_only=True,
               merge_refusal="PEFT does not merge Lily: its router picks the shared B adapters per input"))
