"""llama.cpp's own tools, installed on first use: the HF -> GGUF and LoRA -> GGUF converters, the quantiser and
the runtime, all from one source release of llama-cpp-python (its ``vendor/llama.cpp`` tree).

The first GGUF export downloads that source release from the package index, builds its library once (CPU only,
the multimodal part left out, two parallel jobs), installs the wheel into this environment and keeps the
converter scripts beside it under ``<venv>/share/peft-studio/``. Later exports find both and start at once.

    llamacpp.ensure(print)                             # builds on first use (minutes), then returns at once
    llamacpp.convert_model("merged/", "model-f16.gguf", "f16")
    llamacpp.quantize("model-f16.gguf", "model-q8_0.gguf", "q8_0")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from studio.config import ConfigError

__all__ = ["VERSION", "PINS", "CONVERT_TYPES", "QUANT_TYPES", "tools_dir", "ready", "ensure", "convert_model",
           "convert_lora", "quantize"]

VERSION = "0.3.36"  # llama-cpp-python; its vendor/llama.cpp carries the converters and the quantiser
# installed on first use (not by make): the library built from source, and what the converters import
PINS = {"llama_cpp_python": VERSION, "sentencepiece": "0.2.3"}
# float types come from convert_hf_to_gguf.py itself; every quantised type from llama.cpp's quantiser, on the f16
# file, as llama.cpp's own workflow does (convert, then llama-quantize)
CONVERT_TYPES = ("f32", "f16", "bf16")
QUANT_TYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q8_0": 7, "q2_k": 10, "q3_k_m": 12, "q4_k_s": 14,
               "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18}  # llama_ftype values in llama.h
_KEEP = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion", "gguf-py", "LICENSE")
# A CPU build of the library alone (no multimodal part, tools, tests or server), for this machine's CPU but
# without ggml's AMX path: on AMX CPUs (Sapphire Rapids and later) it crashed decoding q8_0 files here.
_CMAKE_ARGS = ("-DLLAVA_BUILD=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_BUILD_TESTS=OFF "
               "-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8")


def tools_dir() -> Path:
    """Where the converter scripts are kept: inside this Python environment, so a fresh clone builds afresh."""
    return Path(sys.prefix) / "share" / "peft-studio" / f"llama.cpp-{VERSION}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _missing() -> dict[str, str]:
    """Distribution -> pinned version, for each pin not installed at that version."""
    return {d: v for d, v in PINS.items() if _version(d) != v}


def ready() -> bool:
    """Whether the converters, the library and the converters' dependencies are here (no build needed)."""
    return (tools_dir() / "convert_hf_to_gguf.py").is_file() and not _missing()


def _load_problem() -> str | None:
    """Why the built library does not load in a fresh process (None when it loads)."""
    done = subprocess.run([sys.executable, "-c", "import llama_cpp"], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()] or ["no output"]
    return lines[-1][:300]


def _run(cmd: list[str], what: str, env: dict | None = None, cwd: Path | None = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode != 0:
        tail = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise ConfigError(f"{what} failed: {tail[0].strip()[:300]}")


def ensure(say: Callable[[str], None] = lambda line: None) -> Path:
    """Make llama.cpp's converters, quantiser and runtime available; build them on first use.

    Args:
        say: called with one line before the build starts (it takes minutes; see docs/export.md).

    Returns:
        The folder holding convert_hf_to_gguf.py and convert_lora_to_gguf.py.

    Raises:
        ConfigError: the download or the build failed, in one line.
    """
    if ready():
        return tools_dir()
    missing = _missing()
    build = "llama_cpp_python" in missing
    say(f"Building llama.cpp (llama-cpp-python {VERSION}, CPU) for GGUF export: first use only, about 4 minutes "
        "on 2 cores; later exports start at once." if build else
        f"Fetching llama.cpp's converters (llama-cpp-python {VERSION} source): first use only.")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    with tempfile.TemporaryDirectory(prefix="llamacpp-") as tmp:
        tmp = Path(tmp)
        _run([*pip, "download", "--no-deps", "--no-binary", ":all:", "-d", str(tmp),
              f"llama-cpp-python=={VERSION}"], "downloading llama-cpp-python's source (needs the package index)")
        sdist = next(tmp.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = tmp / sdist.name.removesuffix(".tar.gz")
        if missing:
            wanted = [str(src) if d == "llama_cpp_python" else f"{d}=={v}" for d, v in missing.items()]
            env = _build_env()
            _run([*pip, "install", *wanted], "building llama.cpp (needs cmake and a C++ compiler)" if build else
                 "installing the converters' dependencies", env=env)
            problem = _load_problem() if build else None
            if problem:  # a library that cannot load must not pass for a finished build: the next export rebuilds
                _run([*pip, "uninstall", "-y", "llama_cpp_python"], "removing the broken llama.cpp build")
                raise ConfigError(f"the llama.cpp build does not load: {problem}")
        _keep_converters(src / "vendor" / "llama.cpp")
    return tools_dir()


def _build_env() -> dict[str, str]:
    """This process's environment for the build, less what would break it.

    A parent make's variables (under `make test`) would reach the build's own make. And PEFT's BOFT leaves
    ``CC=gcc CXX=gcc`` in ``os.environ`` once its CUDA extension fails to build (its environment patch has no
    ``finally``): a C++ library linked by the C driver misses the C++ runtime and fails to load.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    if env.get("CXX") in ("gcc", "cc"):
        env.pop("CXX")
        env.pop("CC", None)
    env.update(CMAKE_ARGS=_CMAKE_ARGS, CMAKE_BUILD_PARALLEL_LEVEL="2")
    return env


def _keep_converters(tree: Path) -> None:
    dest = tools_dir()
    staging = dest.with_name(dest.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in _KEEP:
        item = tree / name
        if item.is_dir():
            shutil.copytree(item, staging / name, ignore=shutil.ignore_patterns("tests", "__pycache__"))
        elif item.is_file():
            shutil.copy2(item, staging / name)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)  # whole or absent: an interrupted copy is never taken for a finished one


def _converter(script: str, args: list[str], what: str) -> None:
    tools = tools_dir()
    # the converters put their own gguf-py first on sys.path (the same version as the pinned gguf package)
    env = {**os.environ, "PYTHONPATH": str(tools), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    _run([sys.executable, str(tools / script), *args], what, env=env, cwd=tools)


def convert_model(model_dir: str | Path, out_file: str | Path, outtype: str = "f16") -> Path:
    """Convert a Hugging Face model folder to one GGUF file with llama.cpp's ``convert_hf_to_gguf.py``.

    Args:
        model_dir: a model folder (config.json, safetensors, tokenizer with its chat template).
        out_file: the .gguf file to write.
        outtype: one of CONVERT_TYPES.
    """
    if outtype not in CONVERT_TYPES:
        raise ConfigError(f"--quant: the converter writes {', '.join(CONVERT_TYPES)}, not {outtype!r}")
    _converter("convert_hf_to_gguf.py", [str(model_dir), "--outfile", str(out_file), "--outtype", outtype],
               f"convert_hf_to_gguf.py ({outtype})")
    return Path(out_file)


def convert_lora(adapter_dir: str | Path, base_dir: str | Path, out_file: str | Path,
                 outtype: str = "f16") -> Path:
    """Convert a PEFT LoRA folder to a GGUF adapter with llama.cpp's ``convert_lora_to_gguf.py``."""
    _converter("convert_lora_to_gguf.py", [str(adapter_dir), "--base", str(base_dir), "--outfile", str(out_file),
                                           "--outtype", outtype], "convert_lora_to_gguf.py")
    return Path(out_file)


_QUANTIZE = """
import ctypes, sys
import llama_cpp
src, dst, ftype, threads = sys.argv[1:5]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype, params.nthread = int(ftype), int(threads)
sys.exit(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))
"""


def quantize(src: str | Path, dst: str | Path, quant: str, threads: int = 2) -> Path:
    """Quantise a GGUF file with llama.cpp's own quantiser (``llama_model_quantize``, as ``llama-quantize``).

    It runs in its own process, as the converters do: llama.cpp's OpenMP runtime and torch's do not share one
    process safely, and a crash there must not take the studio down.
    """
    if quant not in QUANT_TYPES:
        raise ConfigError(f"--quant: {quant!r} is not one of {', '.join(sorted(QUANT_TYPES))}")
    _run([sys.executable, "-c", _QUANTIZE, str(src), str(dst), str(QUANT_TYPES[quant]), str(threads)],
         f"llama.cpp's quantiser ({quant})")
    return Path(dst)
