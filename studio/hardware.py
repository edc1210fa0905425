"""What hardware is here, a catalog of common GPUs for planning, and whether a run fits.

    gpu = detect()[0]                       # this machine's GPU, or its CPU + RAM
    verdict = fit(estimate(arch, cfg), CATALOG["RTX 4090 24GB"], arch, cfg)
    print(verdict.summary)
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

from studio.config import ConfigError, RunConfig
from studio.models import ArchSpec

__all__ = ["Device", "CATALOG", "detect", "find", "Fit", "Change", "fit", "largest"]

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


@dataclass
class Change:
    """One change to the run and the peak it would have."""

    text: str
    overrides: list[str]
    peak_bytes: int


@dataclass
class Fit:
    """The verdict for one run on one device."""

    verdict: str  # 'fits', 'tight' or 'does not fit'
    device: Device
    peak_bytes: int
    spare_bytes: int
    summary: str
    changes: list[Change] = field(default_factory=list)
    max_micro_batch: int = 0
    max_seq_len: int = 0


_TIGHT = 0.10  # under 10% spare: allocator fragmentation or a long batch can push it over


def _verdict(peak: int, total: int) -> str:
    if peak > total:
        return "does not fit"
    return "tight" if total - peak < _TIGHT * total else "fits"


def _peak(arch: ArchSpec, cfg: RunConfig, device: Device, world_size: int) -> int:
    from studio import memory

    return memory.estimate(arch, cfg, world_size=world_size, device=_est_device(device)).peak_bytes


def _est_device(device: Device) -> str:
    return "cpu" if device.kind == "cpu" else "cuda"


def fit(breakdown, device: Device, arch: ArchSpec, cfg: RunConfig, world_size: int = 1) -> Fit:
    """Whether ``breakdown`` (the estimate of ``cfg`` on ``arch``) fits ``device``.

    When it does not, lists the first single changes that would make it fit, each with its new peak;
    always reports the largest micro-batch and sequence length that fit.
    """
    total, peak = device.total_bytes, breakdown.peak_bytes
    verdict = _verdict(peak, total)
    spare = total - peak
    if verdict == "does not fit":
        summary = f"does not fit {device.name}: needs {peak / GB:.1f} GB of {total / GB:.1f} GB " \
                  f"({-spare / GB:.1f} GB short)"
    else:
        summary = f"{verdict} on {device.name} with {spare / GB:.1f} GB spare ({peak / GB:.1f} of {total / GB:.1f} GB)"
    changes = [] if verdict == "fits" else _changes(arch, cfg, device, world_size)
    return Fit(verdict, device, peak, spare, summary, changes,
               max_micro_batch=largest(arch, cfg, device, "train.micro_batch_size", 1, 4096, world_size),
               max_seq_len=largest(arch, cfg, device, "train.max_seq_len", 8, max(arch.max_position, 8),
                                   world_size))


def _with(cfg: RunConfig, updates: dict) -> RunConfig:
    new = copy.deepcopy(cfg)
    for key, value in updates.items():
        section, _, name = key.partition(".")
        if section == "method" and name != "name":
            new.method.knobs[name] = value
        elif section == "method":
            new.method.name = value
        elif section == "train" and name.startswith("objective."):
            new.train.objective.knobs[name.split(".", 1)[1]] = value
        elif section == "train" and name.startswith("distributed."):
            setattr(new.train.distributed, name.split(".", 1)[1], value)
        else:
            setattr(getattr(new, section), name, value)
    return new


def _candidates(cfg: RunConfig) -> list[tuple[str, dict]]:
    """Single changes that lower memory, in the order a person would try them."""
    from studio import methods, objectives

    t, out = cfg.train, []
    objective = objectives.get(t.objective.name)
    if objective.memory_levers is not None:  # its own knobs first: GRPO's answers per prompt and their length
        out += objective.memory_levers(objective.values(t.objective))
    if not t.gradient_checkpointing:
        out.append(("turn on gradient checkpointing (~30% slower)", {"train.gradient_checkpointing": True}))
    if t.micro_batch_size > 1:
        mb = max(1, t.micro_batch_size // 2)
        acc = t.grad_accum * t.micro_batch_size // mb
        out.append((f"micro-batch {mb} with {acc} accumulation steps (same effective batch)",
                    {"train.micro_batch_size": mb, "train.grad_accum": acc}))
    if t.max_seq_len > 256:
        out.append((f"max_seq_len {t.max_seq_len // 2} (longer rows are cut)", {"train.max_seq_len": t.max_seq_len // 2}))
    if t.optimizer in ("adamw", "paged_adamw_32bit"):
        out.append(("8-bit AdamW (bitsandbytes)", {"train.optimizer": "adamw_8bit"}))
    method = methods.get(cfg.method.name)
    if cfg.model.quantization == "none" and method.quantized is None and method.family != "weights":
        out.append(("load the base in 4-bit NF4 (QLoRA)", {"model.quantization": "nf4"}))
    elif method.family == "weights" and "lora" in methods.names():
        out.append(("LoRA instead of training every weight", {"method.name": "lora"}))
    targets = method.values(cfg.method).get("targets")
    if isinstance(targets, list) and sorted(targets) != ["q_proj", "v_proj"]:
        out.append(("adapt only q_proj and v_proj", {"method.targets": ["q_proj", "v_proj"]}))
    return out


def _changes(arch, cfg, device, world_size) -> list[Change]:
    out = []
    for text, updates in _candidates(cfg):
        peak = _peak(arch, _with(cfg, updates), device, world_size)
        out.append(Change(text, [f"{k}={v}" for k, v in updates.items()], peak))
    fitting = [c for c in out if c.peak_bytes <= device.total_bytes]
    return fitting or sorted(out, key=lambda c: c.peak_bytes)[:3]


def largest(arch: ArchSpec, cfg: RunConfig, device: Device, key: str, lo: int, hi: int, world_size: int = 1) -> int:
    """The largest value of ``key`` (an int setting) in [lo, hi] whose estimate fits ``device``; 0 if none."""
    fits = lambda v: _peak(arch, _with(cfg, {key: v}), device, world_size) <= device.total_bytes  # noqa: E731
    if not fits(lo):
        return 0
    while lo < hi:  # peak grows with both batch and sequence length: bisect
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo
