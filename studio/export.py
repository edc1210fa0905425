"""Export a run's result: the adapter alone (PEFT format, safetensors, model card), or merged into
the base as a plain Hugging Face model folder that ``AutoModelForCausalLM.from_pretrained`` loads
with no studio code.

    export_run("runs/lora-identity", "exports/identity")               # adapter + README + tokenizer
    export_run("runs/lora-identity", "exports/merged", merge=True)     # a whole model folder
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch

from studio import checkpoints
from studio.config import ConfigError, RunConfig

__all__ = ["export_run", "model_card", "DTYPES"]

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_LIBRARY = {"weights": "transformers", "peft": "peft", "adapter": "peft-studio"}  # result format -> who loads it


def export_run(run_dir: str | Path, out: str | Path, merge: bool = False, dtype: str = "auto",
               dequantize: bool = False) -> Path:
    """Write a run's result to ``out`` and return that folder.

    Args:
        run_dir: the run folder (config.yaml + adapter/).
        out: the folder to write; it must not exist yet or be empty.
        merge: merge the adapter into the base weights (methods that can merge).
        dtype: weight dtype of a merged model: auto (the base checkpoint's), bf16, fp16 or fp32.
        dequantize: allow merging a run trained on a quantised base, onto the full-precision base.

    Raises:
        ConfigError: the run cannot be exported this way, with the reason and what to do instead.
    """
    from studio.chat import read_run

    cfg, method, folder = read_run(run_dir)
    run_dir, out = checkpoints.split(run_dir)[0], Path(out)  # RUN@N: the tokenizer and card come from RUN
    if dtype not in ("auto", *DTYPES):
        raise ConfigError(f"--dtype: {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out: {out} already exists and is not an empty folder; choose a new folder")
    if merge:
        _check_mergeable(cfg, method, run_dir, dequantize)
        _write_merged(cfg, folder, out, dtype)
    else:
        if dtype != "auto":
            raise ConfigError("--dtype applies to a merged model; the adapter is exported as it was saved")
        shutil.copytree(folder, out, dirs_exist_ok=True)
    _write_tokenizer(cfg, run_dir, out)
    (out / "README.md").write_text(model_card(cfg, method, run_dir, merged=merge), encoding="utf-8")
    return out


def _quantization(cfg: RunConfig) -> str:
    from studio import methods

    spec = methods.model_spec_for(cfg.model, cfg.method) if hasattr(methods, "model_spec_for") else cfg.model
    return spec.quantization


def _check_mergeable(cfg: RunConfig, method, run_dir: Path, dequantize: bool) -> None:
    if not method.can_merge:
        why = method.merge_refusal or "its result is not an update of the base weights"
        raise ConfigError(f"{method.name}: cannot merge: {why}; export the adapter alone (leave out --merge)")
    quant = _quantization(cfg)
    if quant != "none" and not dequantize:
        raise ConfigError(
            f"{run_dir}: trained on a {quant} quantised base; merging into quantised weights would round the "
            f"update away. Merge onto the full-precision base instead: python -m studio export {run_dir} "
            "--out DIR --merge --dequantize (answers may differ slightly from the quantised model)")


def _export_dtype(cfg: RunConfig, dtype: str) -> torch.dtype:
    if dtype != "auto":
        return DTYPES[dtype]
    from studio import models

    found = getattr(models.load_config(cfg.model), "dtype", None) or getattr(models.load_config(cfg.model),
                                                                              "torch_dtype", None)
    if isinstance(found, str):
        found = getattr(torch, found, None)
    return found if isinstance(found, torch.dtype) else torch.float32


def _write_merged(cfg: RunConfig, folder: Path, out: Path, dtype: str) -> None:
    from studio import methods, models

    # Merge in fp32 on the unquantised base, then cast: the sum W + BA keeps its precision.
    spec = dataclasses.replace(cfg.model, quantization="none", dtype="fp32")
    base, _ = models.load(spec)
    if hasattr(methods, "load_result"):
        model = methods.load_result(base, folder)
        merged = methods.merge(model)
    else:
        from peft import PeftModel

        merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    merged = merged.to(_export_dtype(cfg, dtype))
    merged.config.__dict__.pop("quantization_config", None)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)


def _write_tokenizer(cfg: RunConfig, run_dir: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    from studio import models

    saved = run_dir / "tokenizer"
    tok = AutoTokenizer.from_pretrained(saved) if saved.is_dir() else models.load_tokenizer(cfg.model)
    tok.save_pretrained(out)


def model_card(cfg: RunConfig, method, run_dir: Path, merged: bool) -> str:
    """A README for the exported folder: what it is, how it was trained, and how to load it."""
    state = _read_json(run_dir / "state.json")
    knobs = method.values(cfg.method) if hasattr(method, "values") else cfg.method.knobs
    lib = "transformers" if merged else _LIBRARY.get(getattr(method, "fmt", "peft"), "peft")
    lines = [
        "---", f"library_name: {lib}", f"base_model: {_hub_name(cfg.model.id)}", "tags:", f"- {method.name}",
        "- peft-studio",
        "---", "", f"# {run_dir.name}", "",
        f"{'The base model with the ' + method.title + ' update merged in' if merged else method.title + ' result'}"
        f", trained from `{cfg.model.id}` on `{cfg.data.path}`.", "",
        "| setting | value |", "|---|---|",
        *[f"| method.{k} | {v} |" for k, v in knobs.items()],
        f"| train.max_steps | {cfg.train.max_steps} |", f"| train.epochs | {cfg.train.epochs} |",
        f"| train.learning_rate | {cfg.train.learning_rate or method.learning_rate} |",
    ]
    lines.append(f"| data.path | {cfg.data.path} |")
    for key in ("step", "final_loss", "final_eval_loss", "train_seconds"):
        if state.get(key) is not None:
            lines.append(f"| {key} | {state[key]} |")
    lines += _eval_table(run_dir / "eval.jsonl")
    lines += ["", "## Load it", "", "```python", *(_load_snippet(lib, cfg)), "```", ""]
    return "\n".join(lines)


def _eval_table(path: Path) -> list[str]:
    """The evaluation summary (``python -m studio eval``) as a table, when the run has one."""
    try:
        last = path.read_text(encoding="utf-8").strip().splitlines()[-1]
        summary = json.loads(last)["summary"]
    except (OSError, ValueError, KeyError, IndexError):
        return []
    panes = {k: v for k, v in summary.items() if isinstance(v, dict)}

    def cell(x) -> str:
        return "-" if x is None else f"{x:.4g}"

    rows = [f"| {p} | {cell(v.get('loss'))} | {cell(v.get('perplexity'))} | {cell(v.get('rouge_l'))} |"
            for p, v in panes.items()]
    where = f" (loss on {summary['loss_on']}, {summary.get('prompts', '?')} prompts)" if summary.get("loss_on") else ""
    return ["", f"## Evaluation{where}", "", "| model | loss | perplexity | ROUGE-L |", "|---|---|---|---|", *rows]


def _load_snippet(lib: str, cfg: RunConfig) -> list[str]:
    if lib == "peft-studio":  # the studio's own bottleneck adapters: no other library reads them
        return ["from studio import methods",
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                f'base = AutoModelForCausalLM.from_pretrained("{_hub_name(cfg.model.id)}")',
                'model = methods.load_result(base, "THIS_FOLDER")',
                'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")']
    if lib == "transformers":
        return ["from transformers import AutoModelForCausalLM, AutoTokenizer",
                'model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER")',
                'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")']
    return ["from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'base = AutoModelForCausalLM.from_pretrained("{_hub_name(cfg.model.id)}")',
            'model = PeftModel.from_pretrained(base, "THIS_FOLDER")',
            'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")']


def _hub_name(model_id: str) -> str:
    # the embedded default is SmolLM2-135M-Instruct; elsewhere people load it from the hub by this name
    return "HuggingFaceTB/SmolLM2-135M-Instruct" if model_id in ("", "embedded") else model_id


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
