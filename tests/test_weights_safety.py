"""Weights are read from safetensors only: a pickle file that would run code when loaded never is.

The payload below creates a file when unpickled; each test first proves that it does (so the test can
fail) and then that the studio's path leaves it unread.
"""

import ast
import os
import re
from pathlib import Path

import pytest
import torch

from studio import chat, evaluate, export, models
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
    (tmp_path / "prompts.txt").write_text("Who are you?\n")
    with pytest.raises(ConfigError, match="pickle-format weights.*adapter_model.bin"):
        evaluate.evaluate_run(run, prompts_file=tmp_path / "prompts.txt")
    assert not canary.exists()
    assert not (run / evaluate.EVAL_FILE).exists()


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def unsafe_torch_loads(source: str, where: str = "<source>") -> list[str]:
    """Calls of torch.load, under whatever name it was imported, that do not pass weights_only=True."""
    tree = ast.parse(source)
    modules = {"torch.serialization"}  # dotted names that hold a load()
    loads: set[str] = set()  # bare names bound to torch.load
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ("torch", "torch.serialization"):
                    modules.add(alias.asname or alias.name)
                    modules.add(f"{alias.asname or alias.name}.serialization")
        elif isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
            for alias in node.names:
                if alias.name == "load":
                    loads.add(alias.asname or "load")
                elif alias.name == "serialization":
                    modules.add(alias.asname or "serialization")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_load = (isinstance(func, ast.Name) and func.id in loads) or (
            isinstance(func, ast.Attribute) and func.attr == "load" and _dotted(func.value) in modules)
        safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                   for k in node.keywords)
        if is_load and not safe:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_torch_load_scan_sees_every_spelling():
    for bad in ("import torch\ntorch.load(p)", "from torch import load\nload(p)",
                "from torch import load as read\nread(p, weights_only=False)", "import torch as T\nT.load(p)",
                "import torch.serialization\ntorch.serialization.load(p, map_location='cpu')",
                "from torch import serialization\nserialization.load(p)", "import torch\ntorch.load(p, **kw)"):
        assert unsafe_torch_loads(bad), bad
    for fine in ("import torch\ntorch.load(p, weights_only=True)", "from torch import load\nload(p, weights_only=True)",
                 "import json\njson.load(f)", "from yaml import safe_load\nsafe_load(f)"):
        assert unsafe_torch_loads(fine) == [], fine


def test_no_unsafe_loading_in_the_code():
    """Every torch.load passes weights_only=True; nothing unpickles; remote code is never forced on."""
    problems = []
    for path in STUDIO.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        problems += unsafe_torch_loads(text, path.name)
        problems += [f"{path.name}: {m.group(0)}" for m in re.finditer(r"\bpickle\.loads?\(|\bimport pickle\b", text)]
        problems += [f"{path.name}: {m.group(0)}" for m in re.finditer(r"trust_remote_code\s*=\s*True", text)]
    assert problems == []
    assert ModelSpec().trust_remote_code is False
