"""Process and rank facts inside a run: which rank this process is, how many train together, reductions
over them, and reading on rank 0 only. Imports nothing from the studio: any floor may ask these.

Launch planning (strategies, accelerate configs, the launch command) lives in ``studio.distributed``.
"""

from __future__ import annotations

import os

__all__ = ["rank", "local_rank", "world_size", "is_main_process", "all_reduce_sums", "all_reduce_sum",
           "all_reduce_mean", "fsdp_active", "sharded_loading", "init_early", "from_rank0"]


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    dist = _dist()
    return dist.get_rank() if dist else int(os.environ.get("RANK", 0))


def local_rank() -> int:
    """This process's rank on its own machine."""
    return int(os.environ.get("LOCAL_RANK", 0))


def world_size() -> int:
    """How many processes train together (1 without a launcher)."""
    dist = _dist()
    return dist.get_world_size() if dist else int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True in the one process that writes the run folder, the log and the metrics."""
    return rank() == 0


def all_reduce_sums(*values: float) -> list[float]:
    """Each value summed over every process, in one collective (the values themselves when not
    distributed). Every process must call it at the same point: it is a sync point."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [float(v) for v in values]
    import torch

    # gloo reduces CPU tensors; NCCL only device tensors
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_reduce_sum(value: float) -> float:
    """``value`` summed over every process (itself when not distributed). Every process must call it."""
    return all_reduce_sums(value)[0]


def all_reduce_mean(value: float) -> float:
    """``value`` averaged over every process. Every process must call it."""
    return all_reduce_sum(value) / max(world_size(), 1)


def fsdp_active() -> bool:
    """True inside a process started by ``accelerate launch`` with an FSDP config."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def sharded_loading() -> bool:
    """True where the weights will be sharded (FSDP or ZeRO-3): 4-bit weights then need a float storage dtype,
    and the model stays on the CPU for the launcher to place."""
    zero3 = (os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true")
             and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3")
    return fsdp_active() or zero3


def init_early() -> None:
    """Join the launcher's process group before the model loads (a no-op without a launcher).

    Trainer would do this later anyway (accelerate's PartialState is one per process); doing it first
    lets transformers read the weights on rank 0 only under FSDP's cpu_ram_efficient_loading, so a
    70B model is held once in CPU memory instead of once per GPU.
    """
    if world_size() > 1 and _dist() is None:
        from accelerate import PartialState

        PartialState()


def from_rank0(value: str) -> str:
    """Rank 0's ``value`` in every process (``value`` itself without a launcher). Every process must call it."""
    if world_size() <= 1:
        return value
    init_early()
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
