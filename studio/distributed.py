"""Beyond one GPU: the same RunConfig under accelerate (DDP, FSDP, DeepSpeed ZeRO-2/3).

The studio builds no distribution of its own. ``python -m studio launch`` writes an accelerate
config file for ``train.distributed`` next to the run and runs ``accelerate launch -m studio train``,
which starts one ordinary ``train`` process per GPU. Inside those processes ``studio.process`` (rank,
world size, global sums) keeps one process writing the run folder.

    text, command = render_launch(cfg, gpus=8)           # what the UI shows under "Run on more GPUs"
    plan = write_launch(cfg, gpus=8, preset="presets/x.yaml")   # writes accelerate.yaml, returns the command
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from studio.config import ConfigError, RunConfig

__all__ = [
    "DEFAULT_PORT",
    "SHARDED",
    "LaunchPlan",
    "accelerate_config",
    "render_launch",
    "plan_launch",
    "write_launch",
    "launch_dir",
    "deepspeed_available",
    "run_plan",
]

DEFAULT_PORT = 29500
# Strategies that split the weights themselves across GPUs (the others keep a whole copy on each).
SHARDED = ("fsdp", "deepspeed-zero3")
_DEEPSPEED_STAGE = {"deepspeed-zero2": 2, "deepspeed-zero3": 3}
# accelerate's DistributedType for each strategy once there is more than one process
_DISTRIBUTED_TYPE = {"none": "MULTI_GPU", "ddp": "MULTI_GPU", "fsdp": "FSDP",
                     "deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED"}
_PEFT_FAMILIES = ("lora", "peft")  # tuners PEFT wraps itself; transformers gives them PEFT's FSDP wrap policy


@dataclass
class LaunchPlan:
    """A launch written to disk: the accelerate config, the command, and notes for the person."""

    config_path: Path
    config_yaml: str
    command: list[str]
    notes: list[str] = field(default_factory=list)
    run_config: RunConfig | None = None  # the run with its name pinned

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)


def _strategy(cfg: RunConfig, processes: int) -> str:
    """The strategy that actually runs: several processes with 'none' means plain DDP."""
    strategy = cfg.train.distributed.strategy
    return "ddp" if strategy == "none" and processes > 1 else strategy


def _quantized(cfg: RunConfig) -> str:
    """How the base is loaded once the method has had its say (qlora asks for nf4): none, 8bit, nf4, fp4."""
    from studio import methods

    return methods.model_spec_for(cfg.model, cfg.method).quantization


def _problems(cfg: RunConfig, gpus: int, nodes: int, node_rank: int) -> list[str]:
    out = []
    if gpus < 1:
        out.append(f"--gpus: {gpus} is below the minimum 1")
    if nodes < 1:
        out.append(f"--nodes: {nodes} is below the minimum 1")
    elif not 0 <= node_rank < nodes:
        out.append(f"--node-rank: {node_rank} must be between 0 and {nodes - 1} for {nodes} nodes")
    if nodes > 1 and not cfg.train.run_name:
        out.append("train.run_name: set a run name when launching on several nodes, so every node "
                   "writes to the same run (e.g. --set train.run_name=llama70b-lora)")
    strategy = cfg.train.distributed.strategy
    if strategy == "fsdp" and _quantized(cfg) == "8bit":
        out.append("train.distributed.strategy: FSDP cannot shard 8-bit weights; use model.quantization=nf4 "
                   "(FSDP+QLoRA) or deepspeed-zero3")
    if strategy in SHARDED and _method_format(cfg) == "adapter":
        out.append(f"train.distributed.strategy: {strategy} shards the weights, and bottleneck adapters are saved "
                   "from whole layers only; use ddp or deepspeed-zero2 (each GPU keeps the whole model)")
    if strategy in ("none", "ddp") and cfg.train.distributed.offload:
        out.append("train.distributed.offload: offloading needs fsdp or a deepspeed strategy (DDP keeps a full "
                   "copy on every GPU)")
    return out


def _method_format(cfg: RunConfig) -> str:
    from studio import methods

    return methods.get(cfg.method.name).fmt


def _fsdp_config(cfg: RunConfig) -> dict:
    """FSDP settings as PEFT documents them for LoRA/QLoRA (huggingface.co/docs/peft/accelerate/fsdp)."""
    from studio import methods

    peft_tuner = methods.get(cfg.method.name).family in _PEFT_FAMILIES
    return {
        "fsdp_version": 1,  # the FSDP+QLoRA path PEFT and bitsandbytes document is FSDP1
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # decoder layers from the model's _no_split_modules
        "fsdp_backward_prefetch": "BACKWARD_PRE",
        "fsdp_forward_prefetch": False,
        # rank 0 reads the weights, the others start on the meta device: one copy in CPU RAM, not N
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_sync_module_states": True,  # required by cpu_ram_efficient_loading
        "fsdp_offload_params": cfg.train.distributed.offload,
        "fsdp_reshard_after_forward": "FULL_SHARD",  # FSDP1 spells its sharding strategy here
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",  # checkpoints per rank; no full gather mid-run
        # PEFT tuners: False saves memory (transformers wraps trainable and frozen weights apart);
        # other methods mix frozen and trainable tensors in one layer, which needs True
        "fsdp_use_orig_params": not peft_tuner,
        "fsdp_activation_checkpointing": False,  # train.gradient_checkpointing does it through transformers
    }


def _deepspeed_config(cfg: RunConfig, stage: int, nodes: int) -> dict:
    """ZeRO settings in accelerate's deepspeed_config form (the keys `accelerate config` writes)."""
    offload = cfg.train.distributed.offload
    out = {
        "zero_stage": stage,
        "offload_optimizer_device": "cpu" if offload else "none",
        "offload_param_device": "cpu" if offload and stage == 3 else "none",
        # must agree with the Trainer's own settings, which come from the same RunConfig
        "gradient_accumulation_steps": cfg.train.grad_accum,
        "zero3_init_flag": stage == 3,
        "zero3_save_16bit_model": stage == 3,  # gather the weights for the final save
    }
    if cfg.train.max_grad_norm > 0:
        out["gradient_clipping"] = cfg.train.max_grad_norm
    if nodes > 1:
        out["deepspeed_multinode_launcher"] = "standard"  # torchrun-style on every node; no hostfile or ssh
    return out


def accelerate_config(cfg: RunConfig, gpus: int, nodes: int = 1, node_rank: int = 0,
                      main_address: str = "127.0.0.1", port: int = DEFAULT_PORT) -> dict:
    """The accelerate config (as accelerate 1.x's ClusterConfig reads it) for ``cfg`` on gpus x nodes.

    Args:
        cfg: the run; ``train.distributed`` picks the strategy, offload and mixed precision.
        gpus: GPUs (processes) per node.
        nodes: machines taking part.
        node_rank: this machine's rank (0 is the main node).
        main_address: the main node's address, reachable from every node.
        port: the rendezvous port on the main node.

    Raises:
        ConfigError: the launch settings do not fit together.
    """
    found = _problems(cfg, gpus, nodes, node_rank)
    if found:
        raise ConfigError(found)
    processes = gpus * nodes
    strategy = _strategy(cfg, processes)
    dist_type = _DISTRIBUTED_TYPE[strategy] if (processes > 1 or strategy in ("fsdp", *_DEEPSPEED_STAGE)) else "NO"
    out = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": dist_type,
        "downcast_bf16": "no",
        "enable_cpu_affinity": False,
        "gpu_ids": "all",
        "machine_rank": node_rank,
        "main_training_function": "main",
        "mixed_precision": cfg.train.distributed.mixed_precision,
        "num_machines": nodes,
        "num_processes": processes,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }
    if nodes > 1:
        out["main_process_ip"] = main_address
    if processes > 1:
        out["main_process_port"] = port
    if strategy == "fsdp":
        out["fsdp_config"] = _fsdp_config(cfg)
    elif strategy in _DEEPSPEED_STAGE:
        out["deepspeed_config"] = _deepspeed_config(cfg, _DEEPSPEED_STAGE[strategy], nodes)
    return out


def _pinned_name(cfg: RunConfig) -> str:
    # Every process (and every node) must write to the same folder, so the launcher picks the name once.
    return cfg.train.run_name or f"{cfg.method.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def launch_dir(cfg: RunConfig, run_name: str | None = None) -> Path:
    """Where the launch files of a run live: ``<output_dir>/<run_name>/launch``."""
    return Path(cfg.train.output_dir) / (run_name or _pinned_name(cfg)) / "launch"


def _command(config_path: Path, preset: str, overrides: Sequence[str], run_name: str) -> list[str]:
    cmd = ["accelerate", "launch", "--config_file", str(config_path), "-m", "studio", "train", str(preset)]
    for item in overrides:
        if not item.strip().startswith("train.run_name="):
            cmd += ["--set", item]
    return cmd + ["--set", f"train.run_name={run_name}"]


def render_launch(cfg: RunConfig, gpus: int, nodes: int = 1, node_rank: int = 0,
                  main_address: str = "127.0.0.1", *, preset: str | None = None,
                  overrides: Sequence[str] = (), port: int = DEFAULT_PORT) -> tuple[str, list[str]]:
    """The accelerate config YAML and the ``accelerate launch`` command for a run, without writing anything.

    Args:
        cfg: the run to launch.
        gpus, nodes, node_rank, main_address, port: see ``accelerate_config``.
        preset: the preset file the command trains; None means the run's own copy,
            ``<output_dir>/<run_name>/launch/run.yaml`` (which ``write_launch`` saves).
        overrides: ``section.key=value`` settings passed on as ``--set``.

    Returns:
        (config_yaml_text, command_list); the command names the config file by its path in the launch folder.
    """
    text = yaml.safe_dump(accelerate_config(cfg, gpus, nodes, node_rank, main_address, port), sort_keys=True)
    name = _pinned_name(cfg)
    folder = launch_dir(cfg, name)
    config_path = folder / (f"accelerate-node{node_rank}.yaml" if nodes > 1 else "accelerate.yaml")
    return text, _command(config_path, preset or str(folder / "run.yaml"), overrides if preset else (), name)


def _notes(cfg: RunConfig, gpus: int, nodes: int) -> list[str]:
    strategy = cfg.train.distributed.strategy
    notes = []
    if strategy == "none" and gpus * nodes > 1:
        notes.append("train.distributed.strategy is 'none': several processes run as plain DDP")
    if strategy in _DEEPSPEED_STAGE and not deepspeed_available():
        notes.append("DeepSpeed is not installed here: `pip install deepspeed` before running this command")
    if strategy in SHARDED and _quantized(cfg) in ("nf4", "fp4"):
        notes.append("sharded QLoRA: the 4-bit weights are packed into the compute dtype (bnb_4bit_quant_storage) "
                     "so they can be sharded like any float weight; keep model.dtype equal to the compute dtype")
    if nodes > 1:
        notes.append(f"run the same command on every node with its own --node-rank (0..{nodes - 1}); "
                     "train.output_dir should be on storage every node can reach")
    return notes


def plan_launch(cfg: RunConfig, gpus: int, nodes: int = 1, node_rank: int = 0,
                main_address: str = "127.0.0.1", *, preset: str | None = None,
                overrides: Sequence[str] = (), port: int = DEFAULT_PORT) -> LaunchPlan:
    """The launch ``write_launch`` would write, with the run name pinned, without touching the disk."""
    if not cfg.train.run_name:
        cfg = cfg.with_overrides([f"train.run_name={_pinned_name(cfg)}"])
    text, command = render_launch(cfg, gpus, nodes, node_rank, main_address, preset=preset,
                                  overrides=overrides, port=port)
    config_path = Path(command[command.index("--config_file") + 1])
    return LaunchPlan(config_path, text, command, _notes(cfg, gpus, nodes), cfg)


def write_launch(cfg: RunConfig, gpus: int, nodes: int = 1, node_rank: int = 0,
                 main_address: str = "127.0.0.1", *, preset: str | None = None,
                 overrides: Sequence[str] = (), port: int = DEFAULT_PORT) -> LaunchPlan:
    """Write the accelerate config (and, without a preset, the run's config) into the launch folder."""
    plan = plan_launch(cfg, gpus, nodes, node_rank, main_address, preset=preset, overrides=overrides, port=port)
    config_path = plan.config_path
    config_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(plan.config_yaml, encoding="utf-8")
    tmp.replace(config_path)
    if preset is None:
        plan.run_config.save(config_path.parent / "run.yaml")
    return plan


def deepspeed_available() -> bool:
    """Whether the optional DeepSpeed package is installed (looked up without importing it)."""
    return importlib.util.find_spec("deepspeed") is not None


def _accelerate_executable() -> list[str]:
    # The accelerate next to this Python first, so a virtual environment's copy wins over the PATH's.
    local = Path(sys.executable).with_name("accelerate")
    if local.is_file():
        return [str(local)]
    found = shutil.which("accelerate")
    if found:
        return [found]
    raise ConfigError("accelerate is not installed in this environment: pip install accelerate==1.15.0")


def run_plan(cfg: RunConfig, plan: LaunchPlan) -> int:
    """Run a written launch plan with accelerate and return its exit code (ConfigError if DeepSpeed is missing)."""
    if cfg.train.distributed.strategy in _DEEPSPEED_STAGE and not deepspeed_available():
        raise ConfigError(f"train.distributed.strategy={cfg.train.distributed.strategy} needs DeepSpeed, which is "
                          "not installed: `pip install deepspeed` (optional), or use strategy fsdp")
    env = dict(os.environ, TOKENIZERS_PARALLELISM=os.environ.get("TOKENIZERS_PARALLELISM", "false"))
    return subprocess.run(_accelerate_executable() + plan.command[1:], env=env).returncode
