"""How LoRA's A and B start: PEFT's default, Gaussian, PiSSA (full or fast SVD), OLoRA, EVA, CorDA, and LoftQ
on a 4-bit base. The ``init`` knob of the LoRA family picks one.

PiSSA, OLoRA and CorDA move the weight's principal part into the adapter, so the base inside the trained
model is a residual, not the true base. At save the adapter is converted to a plain LoRA of twice the rank
that applies to the untouched base (PEFT's ``path_initial_model_for_weight_conversion``): export, chat
and merge then use the true base. EVA and CorDA read the run's own data before training (``Context.batches``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from studio.config import ConfigError
from studio.method_api import Context, Knob

__all__ = ["INIT_KNOBS", "QLORA_INIT_KNOBS", "KBIT_INIT_KNOBS", "RESIDUAL", "DATA_PASS", "LOFTQ_NEEDS_CUDA",
           "peft_init", "after_wrap", "save_converted", "machine_refusal"]

RESIDUAL = ("pissa", "pissa_fast", "olora", "corda")
"""Initialisations that change the base weights: their results are converted to plain LoRA at save."""
DATA_PASS = ("eva", "corda")
"""Initialisations that need a pass over the run's data before training."""

_HELP = ("how A and B start: default (A random, B zero: a no-op), gaussian, pissa / pissa_fast (principal "
         "singular vectors; fast: randomised SVD), olora (QR), eva / corda (from a pass over the run's data)")
INIT_KNOBS = (
    Knob("init", str, "default", _HELP, choices=("default", "gaussian", "pissa", "pissa_fast", "olora", "eva", "corda")),
    Knob("svd_iters", int, 16, "subspace iterations of pissa_fast's randomised SVD (more: closer to full PiSSA)",
         min=0, max=256, step=1),
    Knob("eva_rho", float, 2.0, "EVA: how far ranks may move between layers (1: all equal)", min=1.0, max=10.0),
)
QLORA_INIT_KNOBS = (
    Knob("init", str, "default", "how A and B start: default (A random, B zero), gaussian, or loftq (A and B "
         "absorb the 4-bit quantisation error; needs the base's safetensors)", choices=("default", "gaussian", "loftq")),
)
KBIT_INIT_KNOBS = (
    Knob("init", str, "default", "how A and B start: default (A random, B zero) or gaussian",
         choices=("default", "gaussian")),
)
LOFTQ_NEEDS_CUDA = ("method.init: PEFT's LoftQ runs on a CUDA GPU only (it computes on 'cuda', hard-coded); "
                    "use init default on this machine")
_EVA_BATCHES = 64  # EVA stops earlier once the singular vectors settle (its tau)


def peft_init(values: dict) -> dict:
    """The LoraConfig fields for the ``init`` knob (init_lora_weights, eva_config, corda_config)."""
    init = values.get("init", "default")
    if init in ("default", "loftq"):  # LoftQ replaces the weights after wrapping (see after_wrap)
        return {}
    if init == "pissa_fast":
        return {"init_lora_weights": f"pissa_niter_{values['svd_iters']}"}
    if init == "eva":
        from peft import EvaConfig

        return {"init_lora_weights": "eva", "eva_config": EvaConfig(rho=values["eva_rho"])}
    if init == "corda":
        from peft.tuners.lora.config import CordaConfig

        return {"init_lora_weights": "corda", "corda_config": CordaConfig(corda_method="ipm")}
    return {"init_lora_weights": init}


def before_wrap(model, config, values: dict, ctx: Context) -> None:
    """CorDA's covariance pass over the run's data, which PEFT needs before it builds the layers."""
    if values.get("init") != "corda":
        return
    from peft.tuners.lora.corda import preprocess_corda

    batches = _batches(ctx, "corda")
    preprocess_corda(model, config, run_model=lambda: _run(model, batches, ctx, "CorDA"))


def after_wrap(peft_model, values: dict, ctx: Context, model_path: str | None = None):
    """EVA's data pass and LoftQ's weight replacement (both after wrapping); the initial adapter is kept for
    the conversion at save when the base was changed."""
    init = values.get("init", "default")
    if init == "eva":
        from peft import initialize_lora_eva_weights

        batches = _batches(ctx, "eva")
        initialize_lora_eva_weights(peft_model, _reporting(batches, ctx, "EVA"), show_progress_bar=False)
    elif init == "loftq":
        _loftq(peft_model, model_path)
    if init in RESIDUAL:
        from peft import get_peft_model_state_dict

        # the adapter as initialised: the conversion at save subtracts it (Delta W = AB - A0 B0)
        peft_model._studio_initial_adapter = {k: v.detach().clone()
                                              for k, v in get_peft_model_state_dict(peft_model).items()}
    return peft_model


def machine_refusal(values: dict, device: str) -> str:
    """Why the ``init`` knob cannot run on ``device`` ('cuda' or 'cpu'): LoftQ off CUDA; '' otherwise."""
    return LOFTQ_NEEDS_CUDA if values.get("init") == "loftq" and device != "cuda" else ""


def _loftq(peft_model, model_path: str | None) -> None:
    import torch
    from peft import replace_lora_weights_loftq

    if not torch.cuda.is_available():  # PEFT's LoftQ computes on "cuda" (or XPU), hard-coded
        raise ConfigError(LOFTQ_NEEDS_CUDA)

    files = sorted(Path(model_path).glob("*.safetensors")) if model_path and Path(model_path).is_dir() else []
    if len(files) != 1:
        raise ConfigError("method.init: loftq reads the base's unquantised weights from its one model.safetensors "
                          "file; this base has none (a .gguf or sharded model): use init default")
    replace_lora_weights_loftq(peft_model, model_path=str(files[0]))


def _batches(ctx: Context, init: str):
    if ctx.batches is None:
        raise ConfigError(f"method.init: {init} initialises from the run's data, but none was given to apply "
                          "(Context.batches)")
    return ctx.batches()


class _Reporting:
    """Up to ``_EVA_BATCHES`` of the run's batches, sized (EVA asks len()), reporting each one as it is read."""

    def __init__(self, batches, ctx: Context, what: str):
        keep = ("input_ids", "attention_mask", "labels")
        self.rows = [{k: v for k, v in b.items() if k in keep} for b, _ in zip(batches, range(_EVA_BATCHES))]
        self.ctx, self.what = ctx, what

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        for i, batch in enumerate(self.rows):
            if self.ctx.progress is not None:
                self.ctx.progress(f"{self.what} initialisation: data pass, batch {i + 1} of up to {len(self.rows)}")
            yield batch


def _reporting(batches, ctx: Context, what: str) -> _Reporting:
    return _Reporting(batches, ctx, what)


def _run(model, batches, ctx: Context, what: str) -> None:
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in _reporting(batches, ctx, what):
            ids, mask = batch["input_ids"], batch.get("attention_mask")
            for i in range(ids.shape[0]):  # CorDA's hooks take one sequence at a time, without padding
                row = ids[i][mask[i].bool()] if mask is not None else ids[i]
                model(input_ids=row.unsqueeze(0).to(device))


def save_converted(model, folder: Path) -> bool:
    """Save a PiSSA / OLoRA / CorDA result as a plain LoRA on the true base; False when ``model`` is none."""
    initial = getattr(model, "_studio_initial_adapter", None)
    if initial is None:
        return False
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        start = Path(tmp) / "initial"
        start.mkdir()
        save_file({k: v.contiguous() for k, v in initial.items()}, str(start / "adapter_model.safetensors"))
        # PEFT writes the initial config (init_lora_weights=True) there itself, then doubles r and alpha
        model.save_pretrained(str(folder), safe_serialization=True, path_initial_model_for_weight_conversion=str(start))
    return True
