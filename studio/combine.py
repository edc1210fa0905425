"""Adapters as a library: combine finished LoRA runs of one base into a new run folder.

The combination itself is PEFT's ``add_weighted_adapter`` (linear, cat, svd, TIES, DARE, magnitude
pruning); this module checks that the runs can be combined, loads them onto one base, and writes the
result as an ordinary run folder (config.yaml, adapter/ with studio_method.json, tokenizer/, state.json,
combine.json), so it chats, evaluates and exports like any trained run::

    out = combine.combine_runs(["runs/a", "runs/b"], weights=[0.6, 0.4], method="ties", name="a+b")

Every refusal is a ConfigError with one line per problem.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import torch

from studio import methods, models, runs
from studio.config import ConfigError, MethodSpec, RunConfig
from studio.status import RunStatus

__all__ = ["COMBINATIONS", "PRUNING", "COMBINE_FILE", "parse_weights", "check_runs", "combine_runs"]

# PEFT's combination types offered here; the *_svd variants follow the same rules as their bases
COMBINATIONS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")
PRUNING = ("ties", "dare_linear", "dare_ties", "magnitude_prune")  # these read ``density``
COMBINE_FILE = "combine.json"
_NAMES = ("a", "b", "c", "d", "e", "f", "g", "h")  # adapter names inside the PEFT model while combining


def parse_weights(text: str | list, count: int) -> list[float]:
    """Weights from '0.6,0.4' (or a list), one per run; equal weights summing to 1 when empty.

    Raises:
        ConfigError: a weight that is not a finite number, a count that differs from the runs', or weights
            whose sum is zero or below (the combination would remove more than it adds).
    """
    items = [w for w in (text.split(",") if isinstance(text, str) else list(text)) if str(w).strip() != ""]
    if not items:
        return [1.0 / count] * count
    try:
        weights = [float(w) for w in items]
    except ValueError:
        raise ConfigError(f"combine.weights: {text!r} is not a comma-separated list of numbers") from None
    if len(weights) != count:
        raise ConfigError(f"combine.weights: {len(weights)} weights for {count} runs; give one per run")
    if not all(math.isfinite(w) for w in weights):
        raise ConfigError("combine.weights: every weight must be a finite number")
    if sum(weights) <= 0:
        raise ConfigError(f"combine.weights: they sum to {sum(weights):g}; a combination needs a positive sum "
                          "(a negative weight subtracts one adapter, but the rest must outweigh it)")
    return weights


def _peft_type(adapter: Path) -> str:
    try:
        return json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type", "")
    except (OSError, ValueError):
        return ""


def check_runs(paths: list[str | Path]) -> list[runs.Run]:
    """The runs, read and checked: finished, LoRA adapters (PEFT type LORA), one base, one method.

    Raises:
        ConfigError: every problem found, one line each.
    """
    if len(paths) < 2:
        raise ConfigError("combine: name at least two runs")
    if len(paths) > len(_NAMES):
        raise ConfigError(f"combine: at most {len(_NAMES)} runs at once")
    found, problems = [], []
    for path in paths:
        run = runs.load_run(path)  # ConfigError when the folder is missing
        if run.config is None:
            problems.append(f"{run.path}: unreadable config.yaml ({run.config_problem})")
        elif run.status != RunStatus.DONE:
            problems.append(f"{run.path}: the run is {run.status}, not done; only finished runs combine")
        elif methods.get(run.config.method.name).family != "lora" or _peft_type(run.path / "adapter") != "LORA":
            problems.append(f"{run.path}: its result is {run.config.method.name}, not a LoRA adapter; only "
                            "LoRA-family adapters (lora, qlora, lora_8bit) combine")
        elif run.config.method.knobs.get("use_dora"):
            problems.append(f"{run.path}: a DoRA adapter; PEFT combines plain LoRA adapters only")
        found.append(run)
    if problems:
        raise ConfigError(problems)
    first = found[0].config
    for run in found[1:]:
        if (run.config.model.id, run.config.model.revision) != (first.model.id, first.model.revision):
            problems.append(f"{run.path}: base {run.config.model.id!r} differs from {found[0].path}'s "
                            f"{first.model.id!r}; adapters combine only on the same base")
        if run.config.method.name != first.method.name:
            problems.append(f"{run.path}: method {run.config.method.name} differs from {found[0].path}'s "
                            f"{first.method.name}; combine runs of one method")
    if problems:
        raise ConfigError(problems)
    return found


def _base_spec(cfg: RunConfig):
    # adapter tensors are plain tensors whatever the base's quantisation: combine on the full-precision base
    spec = copy.deepcopy(cfg.model)
    spec.quantization = "none"
    return spec


def _combined(found: list[runs.Run], weights: list[float], method: str, density: float, svd_rank: int | None):
    """A PeftModel whose adapter 'default' is PEFT's weighted combination of the runs' adapters."""
    from peft import PeftModel

    base, _ = models.load(_base_spec(found[0].config))
    names = list(_NAMES[:len(found)])
    for run in found:
        models.refuse_pickle(run.path / "adapter")
    model = PeftModel.from_pretrained(base, str(found[0].path / "adapter"), adapter_name=names[0])
    for name, run in zip(names[1:], found[1:]):
        model.load_adapter(str(run.path / "adapter"), adapter_name=name)
    kwargs = {"density": density} if method in PRUNING else {}
    if method == "svd" and svd_rank:
        kwargs["svd_rank"] = svd_rank
    try:
        model.add_weighted_adapter(names, weights, "default", combination_type=method, **kwargs)
    except ValueError as err:  # PEFT's own refusals: ranks or targets that this combination cannot join
        raise ConfigError(f"combine.method {method}: {str(err).splitlines()[0]}") from None
    model.set_adapter("default")
    for name in names:
        model.delete_adapter(name)
    return model.eval()


def _spec(found: list[runs.Run], peft_config) -> MethodSpec:
    spec = copy.deepcopy(found[0].config.method)
    spec.knobs["r"] = int(peft_config.r)
    spec.knobs["alpha"] = float(peft_config.lora_alpha)
    targets = {tuple(sorted(r.config.method.knobs.get("targets") or [])) for r in found}
    if len(targets) > 1:  # the union PEFT adapted, as module names
        spec.knobs["targets"] = sorted(peft_config.target_modules)
    return spec


def combine_runs(paths: list[str | Path], weights: str | list = "", method: str = "linear", name: str = "",
                 root: str | Path | None = None, density: float = 0.5, svd_rank: int | None = None,
                 seed: int = 0) -> Path:
    """Combine finished LoRA runs into a new run folder and return it.

    Args:
        paths: two or more run folders on the same base, trained with the same LoRA-family method.
        weights: one weight per run ('0.6,0.4' or a list); empty means equal weights summing to 1.
        method: one of COMBINATIONS (PEFT's ``combination_type``).
        name: the new run's folder name under ``root`` (-2, -3... when taken); empty joins the runs' names.
        root: where the new run goes; defaults to the first run's parent folder.
        density: share of each update kept by the pruning methods (ties, dare_*, magnitude_prune).
        svd_rank: rank of the result for ``svd`` (default: the largest rank combined).
        seed: DARE drops entries at random; the seed makes a combination repeatable.

    Raises:
        ConfigError: bad settings or runs that cannot combine, one line each.
    """
    if method not in COMBINATIONS:
        raise ConfigError(f"combine.method: {method!r} is not one of {', '.join(COMBINATIONS)}")
    if not 0.0 < float(density) <= 1.0:
        raise ConfigError(f"combine.density: {density} is outside (0, 1]; it is the share of each update kept")
    found = check_runs(paths)
    weights = parse_weights(weights, len(found))
    torch.manual_seed(seed)
    model = _combined(found, weights, method, float(density), svd_rank)
    spec = _spec(found, model.peft_config["default"])
    folder = runs.new_run_dir(root or found[0].path.parent, name or "+".join(r.name for r in found))
    try:
        model.save_pretrained(str(folder / "adapter"), safe_serialization=True)
        methods.finish_result(folder / "adapter", spec)
        if (found[0].path / "tokenizer").is_dir():
            shutil.copytree(found[0].path / "tokenizer", folder / "tokenizer")
        cfg = copy.deepcopy(found[0].config)
        cfg.method = spec
        cfg.train.run_name = folder.name
        cfg.save(folder / "config.yaml")
        info = {"runs": [str(r.path) for r in found], "weights": weights, "method": method,
                "density": density if method in PRUNING else None, "svd_rank": svd_rank, "seed": seed}
        (folder / COMBINE_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        runs.write_state(folder, status=RunStatus.DONE.value, step=0, total_steps=0, started=runs.now(),
                         message=f"combined {len(found)} adapters with {method}",
                         adapter_bytes=runs.folder_bytes(folder / "adapter"))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # no half-written run left to list
        raise
    return folder
