"""Run folders for the chat, evaluate and export tests, written in the documented layout
(config.yaml, adapter/, tokenizer/, state.json) from tiny models, with no training."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from studio.config import MethodSpec, ModelSpec, RunConfig


def perturb(model, seed: int = 1, scale: float = 0.3) -> None:
    """Give every trainable adapter tensor random values, so the tuned model answers differently.

    LoRA's B starts at zero (the adapter is a no-op until trained); random values stand in for training.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * scale + (1.0 if "magnitude" in name else 0.0) * p)


def make_run(root: Path, model_dir: Path, name: str = "run", method: str = "lora", knobs: dict | None = None,
             seed: int = 1, data: dict | None = None, scale: float = 0.3) -> Path:
    """Write runs/<name>/ for ``method`` on the tiny model in ``model_dir`` and return the folder."""
    from studio import methods
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = Path(root) / name
    spec = MethodSpec(name=method, knobs=dict(knobs or {}))
    cfg = RunConfig(model=ModelSpec(id=str(model_dir)), method=spec)
    if data:
        for key, value in data.items():
            setattr(cfg.data, key, value)
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    m = methods.get(method)
    model = m.apply(base, spec, methods.Context(tokenizer=tok, total_steps=1, model_spec=cfg.model))
    perturb(model, seed, scale)
    saver = getattr(methods, "save_result", None)  # the registry's own format once it has one
    if saver is not None:
        saver(model, spec, run / "adapter")
    else:
        model.save_pretrained(run / "adapter", safe_serialization=True)
    tok.save_pretrained(run / "tokenizer")
    cfg.save(run / "config.yaml")
    (run / "state.json").write_text(json.dumps({"status": "done", "message": "", "step": 1, "total_steps": 1}))
    return run
