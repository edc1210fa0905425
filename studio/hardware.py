"""Hardware facts: what is here, a catalog of common GPUs for planning, and which precision each supports.

    gpu = detect()[0]                       # this machine's GPU, or its CPU + RAM
    find("4090")                            # a catalog card by a unique fragment of its name
    resolve_precision("auto")               # 'bf16', 'fp16' or 'fp32' for this machine

The ground floor of planning: imports nothing from studio but the config's error type. Whether a run
fits a device is the fit advisor's question (studio.fit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from studio.config import ConfigError

__all__ = ["Device", "CATALOG", "detect", "find", "cpu_has_bf16", "resolve_precision"]

GB = 1000 ** 3
GiB = 1024 ** 3


@dataclass(frozen=True)
class Device:
    """One device to plan for: a GPU (kind 'cuda'), unified memory (kind 'unified') or the CPU."""

    name: str
    total_bytes: int
    kind: str = "cuda"
    free_bytes: int | None = None
    driver: str | None = None
    note: str = ""


def _gpu(name: str, gib: float, note: str = "") -> Device:
    return Device(name, int(gib * GiB), "cuda", note=note)


# Usable memory as reported by nvidia-smi for each board (GiB).
CATALOG: dict[str, Device] = {d.name: d for d in (
    _gpu("RTX 3060 Ti 8GB", 8), _gpu("RTX 4060 8GB", 8), _gpu("RTX 3060 12GB", 12), _gpu("RTX 4070 12GB", 12),
    _gpu("RTX 4060 Ti 16GB", 16), _gpu("RTX 4080 16GB", 16), _gpu("RTX 3090 24GB", 24), _gpu("RTX 4090 24GB", 24),
    _gpu("RTX 5090 32GB", 32), _gpu("T4 16GB", 15), _gpu("L4 24GB", 22.5), _gpu("A10 24GB", 22.5),
    _gpu("A100 40GB", 40), _gpu("A100 80GB", 80), _gpu("H100 80GB", 80), _gpu("H200 141GB", 141),
    Device("Apple M-series 16GB unified", 16 * GiB, "unified",
           note="planning only: MPS can use about 2/3-3/4 of unified memory and has no bitsandbytes 4-bit"),
    Device("Apple M-series 32GB unified", 32 * GiB, "unified", note="planning only: about 3/4 usable by MPS"),
    Device("Apple M-series 64GB unified", 64 * GiB, "unified", note="planning only: about 3/4 usable by MPS"),
    Device("Apple M-series 128GB unified", 128 * GiB, "unified", note="planning only: about 3/4 usable by MPS"),
)}


def detect() -> list[Device]:
    """The GPUs here (through NVML), else the CPU with its RAM. Never raises."""
    gpus = _nvml_devices()
    if gpus:
        return gpus
    try:
        import psutil

        mem = psutil.virtual_memory()
        total, free = mem.total, mem.available
    except Exception:  # psutil missing or unreadable /proc: still answer
        total, free = 0, None
    return [Device(f"CPU ({os.cpu_count() or '?'} cores)", total, "cpu", free_bytes=free,
                   note="no GPU found: training runs on the CPU, slowly")]


def _nvml_devices() -> list[Device]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver, no GPU
        return []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append(Device(name.decode() if isinstance(name, bytes) else str(name), int(info.total), "cuda",
                              free_bytes=int(info.free), driver=driver.decode() if isinstance(driver, bytes)
                              else str(driver)))
        return out
    except Exception:
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def find(name: str | None) -> Device:
    """A catalog device by name (case-insensitive; a unique fragment like '4090' or 'a100 80' is enough),
    or the device here when ``name`` is empty."""
    if not name:
        return detect()[0]
    want = name.lower().replace("-", " ")
    exact = [d for n, d in CATALOG.items() if n.lower() == want]
    hits = exact or [d for n, d in CATALOG.items() if all(w in n.lower() for w in want.split())]
    if len(hits) == 1:
        return hits[0]
    names = ", ".join(CATALOG)
    if not hits:
        raise ConfigError(f"--gpu: unknown GPU {name!r} (known: {names})")
    raise ConfigError(f"--gpu: {name!r} matches several GPUs ({', '.join(d.name for d in hits)})")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX), where bf16 autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str) -> str:
    """'auto' -> bf16 on GPUs and CPUs that have it, fp16 on older GPUs, else fp32.

    Raises:
        ConfigError: fp16 asked for on a CPU (autocast there has no fp16 path worth using).
    """
    cuda = torch.cuda.is_available()
    if name == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_bf16() else "fp32"
    if name == "fp16" and not cuda:
        raise ConfigError("train.precision: fp16 needs a GPU; use bf16 (or fp32) on a CPU")
    return name
