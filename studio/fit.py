"""The fit advisor: whether a run fits a device, which single changes would make it fit, and the largest
micro-batch and sequence length that do.

    verdict = fit(memory.estimate(arch, cfg), hardware.find("4090"), arch, cfg)
    print(verdict.summary)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from studio import memory, methods, objectives
from studio.config import RunConfig
from studio.hardware import GB, Device
from studio.models import ArchSpec

__all__ = ["Fit", "Change", "fit", "largest"]


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


def _candidates(cfg: RunConfig, arch: ArchSpec) -> list[tuple[str, dict]]:
    """Single changes that lower memory, in the order a person would try them."""
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
        in_backward = {"optimizer_in_backward": True, "max_grad_norm": 0.0}  # every weight's gradient is large
        if not t.optimizer_in_backward and not replace(t, **in_backward).in_backward_problems():
            out.append(("step each weight in backward, so its gradient is freed at once (no gradient clipping)",
                        {f"train.{k}": v for k, v in in_backward.items()}))
        out.append(("LoRA instead of training every weight", {"method.name": "lora"}))
        if arch.num_experts:  # the experts hold most weights; LoRA on attention leaves them frozen
            out.append((f"LoRA on attention only: the {arch.num_experts} experts of every layer stay frozen",
                        {"method.name": "lora", "method.targets": ["attention"]}))
    targets = method.values(cfg.method).get("targets")
    if isinstance(targets, list) and sorted(targets) != ["q_proj", "v_proj"]:
        out.append(("adapt only q_proj and v_proj", {"method.targets": ["q_proj", "v_proj"]}))
    return out


def _changes(arch, cfg, device, world_size) -> list[Change]:
    out = []
    for text, updates in _candidates(cfg, arch):
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
