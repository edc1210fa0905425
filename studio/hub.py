"""Push a run to the Hugging Face hub with huggingface_hub: the adapter, the merged model or GGUF files, each
with its model card (base model, method, data, settings, final losses, the eval table when there is one).

The token comes from the environment (``HF_TOKEN``) or a saved ``hf auth login``; it is handed to the client
and never written anywhere: the files are exported into a temporary folder outside the run and uploaded.

    push_run("runs/lora-identity", "me/identity-lora")                        # the adapter, public
    push_run("runs/lora-identity", "me/identity-gguf", fmt="gguf", private=True, quants=["q4_k_m"])
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from studio import export, gguf
from studio.config import ConfigError

__all__ = ["FORMATS", "push_run", "find_token"]

FORMATS = ("adapter", "merged", "gguf")


def find_token() -> str | None:
    """The hub token from HF_TOKEN or a saved login, or None."""
    from huggingface_hub import get_token

    return get_token()


def _check_repo(repo: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as err:
        raise ConfigError(f"--repo: {repo!r} is not a hub repository name ({str(err).splitlines()[0]})") from None
    if repo.count("/") != 1:
        raise ConfigError(f"--repo: {repo!r}: give it as user/name (or organisation/name)")


def _export(run_dir: Path, folder: Path, fmt: str, quants: list[str], dequantize: bool,
            progress: Callable[[float, str], None]) -> None:
    if fmt == "adapter":
        export.export_run(run_dir, folder)
    elif fmt == "merged":
        export.export_run(run_dir, folder, merge=True, dequantize=dequantize)
    else:
        gguf.export_gguf(run_dir, folder, quants=quants, dequantize=dequantize,
                         progress=lambda f, text: progress(0.8 * f, text))


def _hub_error(err: Exception, repo: str) -> ConfigError:
    """One line for what went wrong talking to the hub."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return ConfigError("the hub is switched off here (HF_HUB_OFFLINE=1): nothing was pushed; "
                           "unset HF_HUB_OFFLINE where the hub can be reached")
    if isinstance(err, HfHubHTTPError):
        code = getattr(err.response, "status_code", None)
        if code in (401, 403):
            return ConfigError(f"the hub refused the push to {repo} (HTTP {code}): check that the token may "
                               "write there (a write token, and the user or organisation is yours)")
        return ConfigError(f"the hub answered HTTP {code} for {repo}: {str(err).splitlines()[0][:200]}")
    return ConfigError(f"could not reach the hub to push {repo}: {type(err).__name__}: "
                       f"{(str(err).splitlines() or [''])[0][:200]}")


def push_run(run_dir: str | Path, repo: str, private: bool = False, fmt: str = "adapter",
             quants: list[str] | tuple[str, ...] = ("q8_0",), dequantize: bool = False,
             progress: Callable[[float, str], None] = lambda f, text: None) -> str:
    """Export a run in ``fmt`` and upload it to the hub repository ``repo``; return the repository's URL.

    Args:
        run_dir: the run folder.
        repo: user/name (or organisation/name); created when it does not exist.
        private: create the repository private.
        fmt: adapter, merged or gguf.
        quants: GGUF types when fmt is gguf.
        dequantize: allow merging a run trained on a quantised base.
        progress: called with (fraction done, what is happening).

    Raises:
        ConfigError: no token, a bad name, a method that cannot be exported this way, or the hub refused or
            could not be reached, in one line.
    """
    from huggingface_hub import HfApi

    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    _check_repo(repo)
    token = find_token()
    if not token:
        raise ConfigError("no hub token: set HF_TOKEN or run `hf auth login` (the studio never stores it)")
    run_dir = Path(run_dir)
    with tempfile.TemporaryDirectory(prefix="push-") as tmp:
        folder = Path(tmp) / "export"
        progress(0.0, f"exporting the {fmt}")
        _export(run_dir, folder, fmt, list(quants), dequantize, progress)
        progress(0.8, f"uploading to {repo}")
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=repo, folder_path=folder, repo_type="model",
                              commit_message=f"{run_dir.name}: {fmt} exported by PEFT Studio")
        except Exception as err:  # the client raises many kinds (HTTP, offline, connection): one line each
            raise _hub_error(err, repo) from None
    progress(1.0, "pushed")
    return str(url)
