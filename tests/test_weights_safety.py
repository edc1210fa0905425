"""Weights are read from safetensors only: a pickle file that would run code when loaded never is.

The payload below creates a file when unpickled; each test first proves that it does (so the test can
fail) and then that the studio's path leaves it unread.
"""

import os
import re
from pathlib import Path

import pytest
import torch

from studio import chat, export, models
from studio.config import ConfigError, ModelSpec

STUDIO = Path(__file__).resolve().parents[1] / "studio"


class _Payload:
    """Unpickling this runs `touch <canary>`."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return os.system, (f"touch {self.canary}",)


def _booby_trap(path: Path, canary: Path) -> Path:
    torch.save({"weight": _Payload(canary)}, path)
    probe = canary.with_name("probe")
    torch.save({"weight": _Payload(probe)}, path.with_name("probe.bin"))
    torch.load(path.with_name("probe.bin"), weights_only=False)  # what an unsafe loader would do
    assert probe.exists(), "the payload must run when unpickled, or these tests prove nothing"
    path.with_name("probe.bin").unlink()
    return path


def test_model_folder_with_only_pickle_weights_is_refused_unread(tmp_path, tiny_dirs):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (tiny_dirs["llama"] / name).exists():
            (folder / name).write_bytes((tiny_dirs["llama"] / name).read_bytes())
    canary = tmp_path / "ran"
    _booby_trap(folder / "pytorch_model.bin", canary)
    with pytest.raises(models.ModelError, match="no safetensors weights"):
        models.load(ModelSpec(id=str(folder)))
    assert not canary.exists()


def test_run_folder_with_a_pickle_adapter_is_refused(tmp_path, tiny_dirs):
    from runfolders import make_run

    run = make_run(tmp_path / "runs", tiny_dirs["llama"])
    canary = tmp_path / "ran"
    _booby_trap(run / "adapter" / "adapter_model.bin", canary)
    with pytest.raises(ConfigError, match="pickle-format weights.*adapter_model.bin"):
        chat.read_run(run)
    with pytest.raises(ConfigError, match="safetensors only"):
        export.export_run(run, tmp_path / "out")
    assert not canary.exists()


def test_no_unsafe_loading_in_the_code():
    """Every torch.load passes weights_only=True; nothing unpickles; remote code is never forced on."""
    problems = []
    for path in STUDIO.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in call.group(1):
                problems.append(f"{path.name}: {call.group(0)}")
        problems += [f"{path.name}: {m.group(0)}" for m in re.finditer(r"\bpickle\.loads?\(|\bimport pickle\b", text)]
        problems += [f"{path.name}: {m.group(0)}" for m in re.finditer(r"trust_remote_code\s*=\s*True", text)]
    assert problems == []
    assert ModelSpec().trust_remote_code is False
