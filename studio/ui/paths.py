"""Which folders the browser UI may read a typed path from.

Anyone who can open the studio can type a path into a field (a model folder, a dataset) or send one
through the API. The studio reads such a path only when it lies under an allowed folder: the runs folder,
presets/, the studio's model cache, Gradio's upload folder, the Hugging Face cache, the model given with
``--model`` at launch, and folders given with ``--allow-dir DIR`` or ``STUDIO_ALLOWED_DIRS``. Symlinks and
``..`` are resolved first, so neither leads out. The command line is not checked: it is the person's shell.

Hub names stay allowed: ``org/name`` is a hub id unless it names an existing file or folder here, the same
rule the model and data loaders follow.
"""

from __future__ import annotations

import os
from pathlib import Path

from studio.config import ConfigError, RunConfig
from studio.ui import state

__all__ = ["PathRefused", "ENV", "FLAG", "allowed_dirs", "set_extra", "is_local", "check", "check_config",
           "check_model", "check_run_dir", "block_for_gradio"]

ENV = "STUDIO_ALLOWED_DIRS"
FLAG = "--allow-dir"
PRESETS = Path(__file__).resolve().parents[2] / "presets"
_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".gguf", ".yaml", ".yml", ".txt")
_extra: list[Path] = []


class PathRefused(ConfigError):
    """A typed path outside the allowed folders; the one line names them and how to add one."""


def set_extra(dirs: list[str] | None) -> None:
    """The folders given with ``--allow-dir`` (replacing any earlier ones)."""
    _extra[:] = [_resolve(d) for d in dirs or [] if d]


def _resolve(text: str | Path) -> Path:
    return Path(text).expanduser().resolve()


def _hf_home() -> Path:
    try:
        from huggingface_hub import constants
        return Path(constants.HF_HOME)
    except ImportError:
        return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))


def _upload_dir() -> Path:
    import tempfile

    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def _studio_cache() -> Path:
    return Path(os.environ.get("STUDIO_CACHE", Path.home() / ".cache" / "peft-studio"))


def _launch_model() -> list[Path]:
    """The model named with --model: typed in the person's shell, so it may be read."""
    model = state.get().default_model
    return [_resolve(model)] if model and is_local(model) else []


def allowed_dirs() -> list[Path]:
    """Every folder a typed path may lie under, resolved, without repeats."""
    env = [d for d in os.environ.get(ENV, "").split(os.pathsep) if d.strip()]
    found = [state.get().runs_root, PRESETS, _studio_cache(), _upload_dir(), _hf_home(),
             *(Path(v) for v in (os.environ.get("HF_HUB_CACHE"), os.environ.get("HF_DATASETS_CACHE")) if v)]
    found = [_resolve(p) for p in found] + _launch_model() + _extra + [_resolve(d) for d in env]
    return list(dict.fromkeys(found))


def is_local(text: str) -> bool:
    """Whether the loaders read ``text`` from disk (True) or take it as a hub name (False).

    A superset of both loaders' rules: anything that exists here, starts like a path, has more than one
    '/', a backslash, '..' or a file suffix is a path; ``org/name`` that exists nowhere here is a hub id.
    """
    text = text.strip()
    if not text:
        return False
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text or ".." in Path(text).parts:
        return True
    if Path(text).suffix.lower() in _FILE_SUFFIXES:
        return True
    return Path(text).expanduser().exists() or Path(text).is_symlink()


def _refusal(field: str, text: str, allowed: list[Path]) -> PathRefused:
    names = ", ".join(str(p) for p in allowed)
    return PathRefused(f"{field}: {text} is outside the folders the studio may read ({names}); start the studio "
                       f"with {FLAG} DIR (or set {ENV}) to allow another folder")


def check(text: str | None, field: str) -> str:
    """``text`` unchanged when it is a hub name or a path under an allowed folder.

    Raises:
        PathRefused: a path outside every allowed folder (after resolving symlinks and '..').
    """
    text = (text or "").strip()
    if not is_local(text):
        return text
    target, allowed = _resolve(text), allowed_dirs()
    if any(target.is_relative_to(folder) for folder in allowed):
        return text
    raise _refusal(field, text, allowed)


def check_model(model_id: str | None, field: str = "model.id") -> str:
    """``check`` for a model id; 'embedded' is the shipped model, never a path."""
    text = (model_id or "").strip()
    return text if text in ("", "embedded") else check(text, field)


def check_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` when every path it reads (model, data, validation data, replayed and mixed-in data) is allowed;
    else every refusal at once."""
    problems = []
    reads = [("model.id", cfg.model.id, check_model), ("data.path", cfg.data.path, check),
             ("data.val_path", cfg.data.val_path, check), ("model.adapter_from", cfg.model.adapter_from, check)]
    if cfg.data.replay_share or cfg.train.ewc:  # replay and EWC's Fisher read the general rows
        reads.append(("data.replay_path", cfg.data.replay_path, check))
    reads += [(f"data.mix[{i}].path", m.get("path"), check) for i, m in enumerate(cfg.data.mix or [], 1)
              if isinstance(m, dict) and isinstance(m.get("path"), str)]
    for field, value, checker in reads:
        try:
            checker(value, field)
        except PathRefused as err:
            problems += err.problems
    if problems:
        raise PathRefused(problems)
    return cfg


def check_run_dir(run_dir: str | None, field: str = "run") -> str:
    """A run folder picked in the UI: it must lie in the runs folder (a run's config names its own paths)."""
    text = (run_dir or "").strip()
    root = _resolve(state.get().runs_root)
    if text and not _resolve(text).is_relative_to(root):
        raise PathRefused(f"{field}: {text} is not a run in the runs folder ({root})")
    return text


def block_for_gradio(runs_root: str | Path | None = None) -> list[str]:
    """Folders Gradio's file route must never serve, whatever a handler returns: the studio's own data.

    Gradio already serves only uploads and its cache; blocking these as well means a handler that hands
    back a path by mistake still cannot expose a run, a cached model or a token in the HF cache.
    """
    upload = _resolve(_upload_dir())
    folders = [runs_root or state.get().runs_root, PRESETS, _studio_cache(), _hf_home(), Path.cwd(), Path.home()]
    return [str(p) for p in dict.fromkeys(_resolve(f) for f in folders) if not upload.is_relative_to(p)]
