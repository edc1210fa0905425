"""The methods facade: every registered method, and what the trainer, chat and export call.

Importing this module loads every definition in ``studio/method_defs`` (each registers itself through
``studio.method_api``), so ``methods.get(name)`` always finds them.

Each method is one ``Method`` entry: its knobs (which the UI turns into widgets, the CLI into
``--set method.KEY=...`` and the validator into messages), ``apply`` (make a loaded model trainable
the method's way) and ``trainable`` (how many parameters it trains, from the architecture alone).

    m = methods.get("lora")
    model = m.apply(model, spec, Context(tokenizer=tok, total_steps=100))
    n = m.trainable(arch, spec)    # == number of requires_grad parameters after apply

Contract for the code that trains, saves, loads, chats and exports (read this before calling in):

1. Load the base through ``methods.model_spec_for(cfg.model, cfg.method)``, not ``cfg.model``: a method
   may set how the base is loaded (QLoRA sets ``quantization`` nf4/fp4, ``double_quant`` and
   ``compute_dtype`` from its own knobs; ``lora_8bit`` sets ``quantization: 8bit``). The method's knobs
   win over the ModelSpec's fields; other methods change nothing. ``Method.model_overrides(spec)`` is
   the dict of ModelSpec fields it sets. Methods that change the base weights (full, freeze, bitfit)
   refuse a quantised base with a ConfigError.
2. ``model = m.apply(model, cfg.method, Context(tokenizer=tok, total_steps=N, model_spec=...,
   gradient_checkpointing=cfg.train.gradient_checkpointing))``. Always use the returned model (PEFT
   methods wrap it). ``total_steps`` is required by AdaLoRA (its rank schedule is tied to it).
   ``apply`` turns on gradient checkpointing itself when ``ctx.gradient_checkpointing`` is true (or a
   QLoRA knob asks for it), in the way that keeps gradients flowing into frozen-embedding models.
3. Per-step hook: ``m.on_step(model, global_step)`` must run after ``optimizer.step()`` and before
   ``zero_grad()`` (AdaLoRA reallocates ranks from the gradients there; other methods have none).
   With the HF Trainer, pass ``callbacks=methods.trainer_callbacks(m)``; it does exactly that in
   ``on_optimizer_step``.
4. ``methods.save_result(model, cfg.method, folder)`` writes the result (safetensors only) plus
   ``studio_method.json`` (method name and knobs). ``methods.load_result(base, folder)`` reads that
   file, so any folder loads back without knowing its method; load ``base`` with
   ``model_spec_for(model_spec, methods.result_spec(folder))``.
5. ``methods.merge(model)`` returns a plain transformers model for mergeable methods (LoRA family,
   IA3) and raises MergeRefused (a ConfigError) with ``Method.merge_refusal`` otherwise. Merging into a
   quantised base is refused: load the result onto an unquantised base first.
6. ``m.mixed_batch(spec)``: whether base and tuned rows may share one batch (PEFT's ``adapter_names``).
   ``methods.adapter_off(model)`` is a context manager that runs a model as its base (PEFT and
   bottleneck adapters); weights-family results have no base inside and refuse.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from studio import method_defs  # noqa: F401  - the definitions register themselves on import
from studio.config import ConfigError, MethodSpec
from studio.method_api import (Context, Knob, MemoryFacts, Method, MergeRefused, all_methods, check_spec, get,
                               method_of, model_spec_for, names, quantised_refusal, register, tag)

__all__ = ["Knob", "Method", "MemoryFacts", "Context", "MergeRefused", "register", "get", "names", "all_methods",
           "check_spec", "model_spec_for", "quantised_refusal", "trainer_callbacks", "save_result", "finish_result",
           "load_result", "result_spec", "merge", "adapter_off", "count_trainable", "method_of", "RESULT_FILE"]

RESULT_FILE = "studio_method.json"


def trainer_callbacks(method: Method) -> list:
    """HF Trainer callbacks that run the method's per-step hook; empty for methods without one."""
    if method.step_hook is None:
        return []
    from transformers import TrainerCallback

    class _StepHook(TrainerCallback):
        # on_optimizer_step: after optimizer.step(), before the Trainer zeroes the gradients
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            method.on_step(model, state.global_step)

    return [_StepHook()]


def count_trainable(model) -> int:
    """Parameters that will train (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)






def save_result(model, spec: MethodSpec, folder: str | Path) -> Path:
    """Write the trained result into ``folder`` in the method's format (safetensors) plus studio_method.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    get(spec.name).save(model, spec, folder)
    return finish_result(folder, spec)


def finish_result(folder: str | Path, spec: MethodSpec) -> Path:
    """Mark ``folder``, which holds the method's saved weights, as a result: write studio_method.json."""
    method, folder = get(spec.name), Path(folder)
    info = {"method": spec.name, "knobs": method.values(spec), "format": method.fmt}
    (folder / RESULT_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return folder


def result_spec(folder: str | Path) -> MethodSpec:
    """The MethodSpec a result folder was saved with (from its studio_method.json)."""
    folder = Path(folder)
    path = folder / RESULT_FILE
    if not path.is_file():
        if (folder / "adapter_config.json").is_file():  # a plain PEFT folder from elsewhere
            return _spec_from_peft(folder)
        raise ConfigError(f"{folder}: not a saved result (it has no {RESULT_FILE})")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return MethodSpec(info["method"], dict(info.get("knobs") or {}))
    except (ValueError, KeyError) as err:
        raise ConfigError(f"{path}: unreadable ({err})") from None


def _spec_from_peft(folder: Path) -> MethodSpec:
    kind = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type", "")
    by_type = {"LORA": "lora", "ADALORA": "adalora", "IA3": "ia3", "PREFIX_TUNING": "prefix",
               "PROMPT_TUNING": "prompt", "P_TUNING": "ptuning", "LN_TUNING": "ln_tuning", "MISS": "miss",
               "SUPERTUNING": "supertuning",
               **{t: t.lower() for t in ("LOHA", "LOKR", "GRALORA", "HIRA", "DELORA", "GLORA", "DEFT", "PEANUT",
                                         "LILY", "VERA", "PVERA", "RANDLORA", "VBLORA", "UNILORA", "TINYLORA", "OFT",
                                         "BOFT", "HRA", "ROAD", "PSOFT", "OSF", "FOURIERFT", "WAVEFT", "C3A")}}
    if kind not in by_type:
        raise ConfigError(f"{folder}: PEFT type {kind!r} is not one the studio loads")
    return MethodSpec(by_type[kind], {})


def load_result(base_model, folder: str | Path):
    """Load a saved result onto a freshly loaded base model and return the model to run."""
    spec = result_spec(folder)
    model = get(spec.name).load(base_model, Path(folder), spec)
    return tag(model, spec)


def merge(model):
    """A plain transformers model with the result merged in (LoRA family, IA3); MergeRefused otherwise."""
    spec = method_of(model)
    if spec is None:
        raise MergeRefused("this model carries no studio method result to merge")
    method = get(spec.name)
    if not method.can_merge or method.merge_fn is None:
        raise MergeRefused(f"{method.name}: cannot merge: {method.merge_refusal}")
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        raise MergeRefused(f"{method.name}: merging into a quantised base loses precision; load the result "
                           "onto an unquantised base (model.quantization: none) and merge that")
    return method.merge_fn(model)


@contextlib.contextmanager
def adapter_off(model):
    """Run ``model`` as its base inside the block (PEFT tuners and bottleneck adapters)."""
    spec = method_of(model)
    method = get(spec.name) if spec else None
    switch = method.switch_off if method else None
    if switch is None:
        raise ConfigError(f"{spec.name if spec else 'this model'}: the tuned weights replaced the base ones, "
                          "so there is no base to switch to; load the base separately")
    with switch(model):
        yield model
