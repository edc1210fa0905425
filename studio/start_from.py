"""Starting a run from a finished one (``model.adapter_from``): DPO on top of an SFT run is the common case.

The run's config.yaml keeps ``model.adapter_from``, so its folder records where it started. The new run
trains the same adapter further: the method is applied with the saved knobs, then the saved weights are
loaded into it, so step 0 answers exactly as the finished run does.
"""

from __future__ import annotations

from pathlib import Path

from studio import methods, runs
from studio.config import ConfigError, RunConfig

__all__ = ["result_folder", "finished_runs", "check", "apply"]


def result_folder(path: str | Path) -> Path:
    """The result folder of ``path``: a run folder's adapter/, or the folder itself when it holds a result.

    Raises:
        ConfigError: no saved result there (one line).
    """
    path = Path(path)
    for folder in (path / "adapter", path):
        if (folder / methods.RESULT_FILE).is_file():
            return folder
    raise ConfigError(f"model.adapter_from: {path} holds no finished run (no adapter/{methods.RESULT_FILE}); "
                      "pick a run folder whose training ended")


def finished_runs(root: str | Path) -> list[tuple[str, str]]:
    """(name, folder) of the runs under ``root`` a new run can start from (a saved result), newest first."""
    out = []
    for r in runs.list_runs(root):
        try:
            result_folder(r.path)
        except ConfigError:
            continue
        out.append((r.name, str(r.path)))
    return out


def check(cfg: RunConfig) -> list[str]:
    """Problems with starting ``cfg`` from ``model.adapter_from`` (empty when unset or fine)."""
    if not cfg.model.adapter_from:
        return []
    try:
        spec = methods.result_spec(result_folder(cfg.model.adapter_from))
    except ConfigError as err:
        return err.problems
    if spec.name != cfg.method.name:
        return [f"model.adapter_from: that run trained with method {spec.name}; set method.name: {spec.name}"]
    if methods.get(spec.name).fmt != "peft":
        return [f"model.adapter_from: continuing a {spec.name} result is not supported; start from a PEFT "
                "method's run (lora, dora, qlora, ia3, ...)"]
    return []


def apply(model, cfg: RunConfig, ctx: methods.Context):
    """The method applied to ``model`` as ``cfg`` asks, starting from ``model.adapter_from``'s weights when set."""
    method = methods.get(cfg.method.name)
    if not cfg.model.adapter_from:
        return method.apply(model, cfg.method, ctx)
    problems = check(cfg)
    if problems:
        raise ConfigError(problems)
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = result_folder(cfg.model.adapter_from)
    model = method.apply(model, methods.result_spec(folder), ctx)  # the saved knobs shape the adapter
    device = next(model.parameters()).device
    missing = set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors"), device=str(device)))
    if getattr(missing, "unexpected_keys", None):
        raise ConfigError(f"model.adapter_from: {folder} does not fit this model "
                          f"({len(missing.unexpected_keys)} weights have no place in it)")
    return model
