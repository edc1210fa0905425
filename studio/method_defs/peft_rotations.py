"""PEFT tuners that rotate or reflect the frozen weight, or change a sparse part of it: OFT, BOFT, HRA,
RoAd, PSOFT, OSF (orthogonal), FourierFT, WaveFT, C3A (spectral / circulant), Super-Tuning (sparse) and
LayerNorm tuning. Knob names, defaults and ranges follow PEFT's config fields (peft 0.21)."""

from __future__ import annotations

from studio import targets as tg
from studio.method_defs.tuners_common import common_divisor, peft_kwargs, targets_knob, tuner
from studio.method_api import Knob, register

_T = targets_knob()


def _drop(field: str, what: str = "dropout on the adapter input") -> Knob:
    return Knob(field, float, 0.0, what, min=0.0, max=0.9, step=0.01)


# --- orthogonal ----------------------------------------------------------------------------------------------

register(tuner("oft", "OFT", "a learned block-diagonal rotation of each weight: keeps the weights' angles",
               "OFTConfig", (
                   Knob("oft_block_size", int, 32, "size of each rotation block (must divide the input features)",
                        min=1, max=4096, step=1),
                   Knob("coft", bool, False, "constrained OFT: keep the rotation within eps of the identity"),
                   Knob("eps", float, 6e-5, "how far constrained OFT may rotate", min=0.0, max=1.0),
                   Knob("block_share", bool, False, "one rotation shared by all blocks of a layer"),
                   Knob("use_cayley_neumann", bool, True, "Cayley-Neumann series: faster, slightly less orthogonal"),
                   _drop("module_dropout", "chance of a rotation block acting as identity in training"), _T),
               learning_rate=1e-3, linear_only=True, build=lambda v, m, n: {**peft_kwargs(v, m, n), "r": 0}))

register(tuner("boft", "BOFT", "orthogonal fine-tuning through butterfly factors: a dense rotation from few weights",
               "BOFTConfig", (
                   Knob("boft_block_size", int, 4, "size of each butterfly block", min=1, max=4096, step=1),
                   Knob("boft_n_butterfly_factor", int, 1, "butterfly factors (1: plain block-diagonal OFT)", min=1,
                        max=16, step=1),
                   _drop("boft_dropout", "chance of a block acting as identity in training"), _T),
               learning_rate=1e-3, linear_only=True))

register(tuner("hra", "HRA", "a chain of r Householder reflections of each weight (orthogonal, few weights)",
               "HRAConfig", (Knob("r", int, 8, "number of reflections (even numbers work best)", min=1, max=1024,
                                  step=1),
                             Knob("apply_GS", bool, False, "Gram-Schmidt: make the reflections exactly orthogonal"),
                             _T),
               learning_rate=1e-3, linear_only=True))


def _road(values: dict, model, names: list[str]) -> dict:
    out = peft_kwargs(values, model, names)
    # 0: the largest even group up to 64 dividing every adapted layer's output features, as RoAd requires
    size = common_divisor(model, names, 64, of="out")
    out["group_size"] = values["group_size"] or (size if size % 2 == 0 else 2 * size)
    return out


register(tuner("road", "RoAd", "2D rotations of pairs of output features: tiny, and batches mix adapters cheaply",
               "RoadConfig", (
                   Knob("variant", str, "road_1", "road_1: one angle and scale per pair; road_2, road_4: more",
                        choices=("road_1", "road_2", "road_4")),
                   Knob("group_size", int, 0, "features per rotation group; must divide the output features (0: "
                        "the largest that does, up to 64)", min=0, max=4096, step=2), _T),
               learning_rate=3e-3, linear_only=True, build=_road))

register(tuner("psoft", "PSOFT", "an r x r orthogonal rotation inside the weight's principal subspace (SVD init)",
               "PsoftConfig", (
                   Knob("r", int, 32, "size of the principal subspace", min=1, max=1024, step=1),
                   Knob("psoft_alpha", float, 32.0, "scale of the update", min=0.0, max=4096.0),
                   Knob("psoft_svd", str, "full", "SVD used at start: full, or lowrank (faster on big layers)",
                        choices=("full", "lowrank")),
                   _drop("psoft_dropout"), _T),
               learning_rate=5e-4, linear_only=True))

register(tuner("osf", "OSF", "trains the low singular directions of each weight, keeps the top ones "
               "(continual learning without forgetting)", "OSFConfig", (_T,),
               learning_rate=1e-4, linear_only=True))

# --- spectral, circulant and sparse ---------------------------------------------------------------------------

register(tuner("fourierft", "FourierFT", "learns a few spectral coefficients of each weight change (inverse DFT)",
               "FourierFTConfig", (
                   Knob("n_frequency", int, 1000, "learned frequencies per layer (at most in x out)", min=1,
                        max=10**8, step=1),
                   Knob("scaling", float, 150.0, "scale of the change, like LoRA's alpha", min=0.0, max=1e5),
                   Knob("random_loc_seed", int, 777, "seed of where the frequencies sit", min=0, max=2**31 - 1,
                        step=1), _T),
               learning_rate=1e-2))

register(tuner("waveft", "WaveFT", "learns a few wavelet coefficients of each weight change (inverse DWT)",
               "WaveFTConfig", (
                   Knob("n_frequency", int, 2592, "learned coefficients per layer (at most in x out)", min=1,
                        max=10**8, step=1),
                   Knob("scaling", float, 25.0, "scale of the change, like LoRA's alpha", min=0.0, max=1e5),
                   Knob("wavelet_family", str, "db1", "wavelet (db1 is Haar)", choices=("db1", "db2", "sym2",
                                                                                        "coif1")),
                   Knob("random_loc_seed", int, 777, "seed of where the coefficients sit", min=0, max=2**31 - 1,
                        step=1), _T),
               learning_rate=1e-2))


def _c3a(values: dict, model, names: list[str]) -> dict:
    # 0: the greatest common divisor of the layers' sizes, the C3A paper's advice
    return {"block_size": values["block_size"] or common_divisor(model, names, 4096)}


register(tuner("c3a", "C3A", "circular convolution (block-circulant) updates: full rank, computed by FFT",
               "C3AConfig", (
                   Knob("block_size", int, 0, "circulant block size; must divide every layer's sizes (0: their "
                        "greatest common divisor; larger: fewer weights)", min=0, max=4096, step=1), _T),
               learning_rate=1e-3, linear_only=True, build=_c3a))

register(tuner("supertuning", "Super-Tuning", "trains a sparse set of the weight's own entries (largest first)",
               "SupertuningConfig", (
                   Knob("sparsity", float, 0.99, "share of entries kept frozen (0.99: 1% train)", min=0.0,
                        max=0.9999, step=0.001),
                   Knob("select_top", bool, True, "train the largest-magnitude entries (false: the smallest)"), _T),
               learning_rate=1e-4, linear_only=True))


def _norms(model, values: dict) -> list[str]:
    """Short names of the norm layers ('input_layernorm', 'ln_1', 'norm'...), or those listed."""
    found = [n for n in tg.module_names(model) if any(tg.is_norm(m) for f, m in model.named_modules()
                                                      if f == n or f.endswith("." + n))]
    return values["norms"] or found


register(tuner("ln_tuning", "LayerNorm tuning", "only the norm layers train, on a copy: tiny, switchable off",
               "LNTuningConfig", (
                   Knob("norms", list, [], "norm layers to tune by name (empty: every norm layer)",
                        picks="modules"),),
               learning_rate=1e-3, pick=_norms, build=lambda v, m, n: {}))
