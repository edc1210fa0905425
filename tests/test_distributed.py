"""studio.distributed: accelerate configs for every strategy, the launch command, and a 2-process DDP run on CPU."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from studio import cli, distributed, process
from studio.config import ConfigError, RunConfig

from conftest import ROOT, save_tiny

STRATEGIES = ("none", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")


def _cfg(tmp_path: Path, *sets: str) -> RunConfig:
    return RunConfig().with_overrides([f"train.output_dir={tmp_path / 'runs'}", *sets])


def _accelerate_args(config_path: Path):
    """Parse and check a config the way `accelerate launch --config_file` does, without launching."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config_path), "-m", "studio", "train", "x.yaml"])
    args, _, _ = _validate_launch_command(args)
    return args


def _cli(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "studio", *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_config_loads_in_accelerate(tmp_path, strategy):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import prepare_multi_gpu_env

    cfg = _cfg(tmp_path, f"train.distributed.strategy={strategy}", "train.run_name=r1")
    plan = distributed.write_launch(cfg, gpus=2)
    assert plan.config_path == tmp_path / "runs" / "r1" / "launch" / "accelerate.yaml"
    loaded = ClusterConfig.from_yaml_file(str(plan.config_path))  # rejects keys accelerate does not know
    assert loaded.num_processes == 2 and loaded.num_machines == 1
    expected = {"fsdp": "FSDP", "deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED"}.get(strategy, "MULTI_GPU")
    assert loaded.distributed_type.value == expected
    args = _accelerate_args(plan.config_path)
    if strategy == "fsdp":
        env = prepare_multi_gpu_env(args)  # accelerate's own checks of the FSDP settings
        assert env["ACCELERATE_USE_FSDP"] == "true"
        assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
        assert env["FSDP_USE_ORIG_PARAMS"] == "false"  # LoRA: PEFT's documented setting
        assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true" and env["FSDP_SYNC_MODULE_STATES"] == "true"
    elif strategy.startswith("deepspeed"):
        from accelerate.utils import prepare_deepspeed_cmd_env

        assert args.use_deepspeed and args.zero_stage == int(strategy[-1])
        args.deepspeed_fields_from_accelerate_config = []  # set by accelerate's launcher just before this call
        env = prepare_deepspeed_cmd_env(args)[1]
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == strategy[-1]
        assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == str(strategy.endswith("3")).lower()
    else:
        env = prepare_multi_gpu_env(args)
        assert args.multi_gpu and "ACCELERATE_USE_FSDP" not in env and env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_offload_and_full_finetune_settings(tmp_path):
    cfg = _cfg(tmp_path, "train.distributed.strategy=fsdp", "train.distributed.offload=true", "method.name=full")
    fsdp = distributed.accelerate_config(cfg, gpus=8)["fsdp_config"]
    assert fsdp["fsdp_offload_params"] is True
    assert fsdp["fsdp_use_orig_params"] is True  # not a PEFT tuner: frozen and trainable share layers
    cfg = _cfg(tmp_path, "train.distributed.strategy=deepspeed-zero3", "train.distributed.offload=true",
               "train.grad_accum=4")
    ds = distributed.accelerate_config(cfg, gpus=8)["deepspeed_config"]
    assert ds["offload_param_device"] == "cpu" and ds["offload_optimizer_device"] == "cpu"
    assert ds["gradient_accumulation_steps"] == 4 and ds["zero3_init_flag"] is True
    cfg = _cfg(tmp_path, "train.distributed.strategy=deepspeed-zero2", "train.distributed.offload=true")
    ds = distributed.accelerate_config(cfg, gpus=8)["deepspeed_config"]
    assert ds["offload_optimizer_device"] == "cpu" and ds["offload_param_device"] == "none"


def test_multi_node(tmp_path):
    cfg = _cfg(tmp_path, "train.distributed.strategy=fsdp", "train.run_name=big")
    text, cmd = distributed.render_launch(cfg, 8, nodes=2, node_rank=1, main_address="10.0.0.5")
    conf = yaml.safe_load(text)
    assert conf["num_processes"] == 16 and conf["num_machines"] == 2 and conf["machine_rank"] == 1
    assert conf["main_process_ip"] == "10.0.0.5" and conf["main_process_port"] == distributed.DEFAULT_PORT
    assert cmd[:3] == ["accelerate", "launch", "--config_file"] and cmd[3].endswith("accelerate-node1.yaml")
    with pytest.raises(ConfigError, match="run_name"):  # nodes must agree on the run folder
        distributed.render_launch(_cfg(tmp_path), 8, nodes=2)
    with pytest.raises(ConfigError, match="node-rank"):
        distributed.render_launch(cfg, 8, nodes=2, node_rank=2)


def test_bad_combinations(tmp_path):
    with pytest.raises(ConfigError, match="8-bit"):
        distributed.render_launch(_cfg(tmp_path, "train.distributed.strategy=fsdp", "model.quantization=8bit"), 2)
    with pytest.raises(ConfigError, match="offload"):
        distributed.render_launch(_cfg(tmp_path, "train.distributed.strategy=ddp", "train.distributed.offload=true"), 2)
    with pytest.raises(ConfigError, match="gpus"):
        distributed.render_launch(_cfg(tmp_path), 0)
    for strategy in distributed.SHARDED:  # bottleneck adapters are saved from whole layers
        with pytest.raises(ConfigError, match="bottleneck adapters"):
            distributed.render_launch(_cfg(tmp_path, f"train.distributed.strategy={strategy}", "method.name=adapter"), 2)
    distributed.render_launch(_cfg(tmp_path, "train.distributed.strategy=deepspeed-zero2", "method.name=adapter"), 2)


def test_render_for_the_ui_trains_the_runs_own_copy(tmp_path):
    cfg = _cfg(tmp_path, "train.distributed.strategy=ddp")
    text, cmd = distributed.render_launch(cfg, 4)
    assert yaml.safe_load(text)["num_processes"] == 4
    run_name = cmd[-1].split("=", 1)[1]
    assert cmd[4:8] == ["-m", "studio", "train", str(tmp_path / "runs" / run_name / "launch" / "run.yaml")]
    assert not (tmp_path / "runs").exists()  # rendering writes nothing
    plan = distributed.write_launch(cfg, 4)
    saved = RunConfig.load(plan.command[7])
    assert saved.train.run_name == plan.command[-1].split("=", 1)[1]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cli_dry_run_prints_config_and_command(tmp_path, strategy):
    out = _cli("launch", "presets/quickstart.yaml", "--gpus", "2", "--dry-run",
               "--set", f"train.distributed.strategy={strategy}", "--set", f"train.output_dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    head, _, tail = out.stdout.partition("\n")
    conf_text, _, command = tail.rstrip().rpartition("\n")
    assert head.startswith("# ") and "accelerate.yaml" in head
    assert yaml.safe_load(conf_text)["num_processes"] == 2
    assert command.startswith("accelerate launch --config_file ") and " -m studio train presets/quickstart.yaml " in command
    assert f"--set train.distributed.strategy={strategy}" in command and "--set train.run_name=" in command
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    if strategy.startswith("deepspeed") and not distributed.deepspeed_available():
        assert "DeepSpeed is not installed" in out.stderr


def test_cli_dry_run_without_a_preset_plans_the_default_run(tmp_path):
    out = _cli("launch", "--gpus", "2", "--dry-run", "--set", "train.distributed.strategy=fsdp",
               "--set", f"train.output_dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    conf_text, _, command = out.stdout.partition("\n")[2].rstrip().rpartition("\n")
    run_name = command.rpartition("--set train.run_name=")[2]
    # the default RunConfig travels as the run's own copy, written beside the accelerate config when launched
    assert f" -m studio train {tmp_path / run_name / 'launch' / 'run.yaml'} " in command
    assert yaml.safe_load(conf_text)["distributed_type"] == "FSDP"
    assert not any(tmp_path.iterdir())


def test_cli_launch_runs_accelerate(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(distributed.subprocess, "run",
                        lambda cmd, env: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    args = argparse.Namespace(preset="presets/quickstart.yaml", set=["train.max_steps=3"], gpus=2, nodes=1,
                              node_rank=0, main_address="127.0.0.1", dry_run=False)
    cfg = _cfg(tmp_path, "train.run_name=go")
    assert cli.launch(cfg, args) == 0
    (cmd,) = calls
    assert Path(cmd[0]).name == "accelerate" and cmd[1] == "launch"
    assert (tmp_path / "runs" / "go" / "launch" / "accelerate.yaml").is_file()
    assert capsys.readouterr().out.strip().endswith("--set train.max_steps=3 --set train.run_name=go")


def test_deepspeed_missing_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "deepspeed_available", lambda: False)
    args = argparse.Namespace(preset=None, set=[], gpus=2, nodes=1, node_rank=0, main_address="127.0.0.1",
                              dry_run=False)
    with pytest.raises(ConfigError, match="needs DeepSpeed, which is not installed"):
        cli.launch(_cfg(tmp_path, "train.distributed.strategy=deepspeed-zero2"), args)


def test_rank_helpers_without_a_launcher(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert process.rank() == 0 and process.world_size() == 1 and process.is_main_process()
    assert process.all_reduce_sum(3.5) == 3.5 and process.all_reduce_mean(2.0) == 2.0
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert process.fsdp_active() and process.sharded_loading()


# ---- a real 2-process DDP run on the CPU --------------------------------------------------------------------

_ROW_CHARS = 48  # every row the same length: per-rank mean losses then average to the global mean exactly


def _ddp_config(tmp_path: Path, model_dir: Path, out: Path, micro_batch: int) -> Path:
    import random

    data = tmp_path / "rows.jsonl"
    if not data.is_file():
        rnd = random.Random(0)
        words = "quill inkwell labs made by a small model that answers".split()
        rows = []
        for _ in range(4):
            text = ""
            while len(text) < _ROW_CHARS:
                text += rnd.choice(words) + " "
            rows.append(json.dumps({"text": text[:_ROW_CHARS]}))
        data.write_text("\n".join(rows) + "\n")
    # 4 rows, one global batch of 4 per step: every step sees the whole data set, so how Trainer shards
    # and shuffles rows across ranks cannot change what a step computes (the sum over the batch).
    cfg = RunConfig().with_overrides([
        f"model.id={model_dir}", "method.name=lora", "method.r=4", "method.dropout=0.0",
        "method.targets=[q_proj, v_proj]",
        f"data.path={data}", "data.format=text", "data.train_on=all", "data.packing=false",
        "train.max_steps=3", f"train.micro_batch_size={micro_batch}", "train.grad_accum=1", "train.max_seq_len=64",
        "train.learning_rate=0.01", "train.scheduler=constant", "train.warmup_ratio=0.0", "train.precision=fp32",
        "train.seed=7", f"train.output_dir={out}",  # no run_name: the ranks must agree on rank 0's
    ])
    return cfg.save(tmp_path / f"mb{micro_batch}.yaml")


def _train(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=240)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _adapter(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_two_process_ddp_matches_one_process(tmp_path):
    import torch

    model_dir = save_tiny("llama", tmp_path / "tiny")
    one, two = tmp_path / "one", tmp_path / "two"
    single = _train([sys.executable, "-m", "studio", "train", str(_ddp_config(tmp_path, model_dir, one, 4)),
                     "--quiet"], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = _train([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                  "127.0.0.1", "--master_port", str(_free_port()), "-m", "studio", "train",
                  str(_ddp_config(tmp_path, model_dir, two, 2)), "--quiet"], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    (run,) = two.iterdir()  # one run folder, written by rank 0 alone, trained into by both ranks
    (one_run,) = one.iterdir()
    assert set(ddp.stdout.split()) == {str(run)}  # every rank trained into that folder
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "done" and state["world_size"] == 2 and state["step"] == 3
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]  # one row per step, not one per process
    single_rows = [json.loads(line) for line in (one_run / "metrics.jsonl").read_text().splitlines()]
    # the logged loss is the global one (averaged over processes), the token count the global one (summed)
    for a, b in zip(rows, single_rows):
        assert abs(a["loss"] - b["loss"]) < 1e-4
        assert a["tokens"] == b["tokens"]

    got, want = _adapter(run), _adapter(one_run)
    assert got.keys() == want.keys() and got
    assert any(t.abs().max() > 1e-3 for k, t in want.items() if "lora_B" in k)  # training moved the weights
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=2e-5, rtol=1e-4)


def test_sharded_qlora_stores_4bit_weights_in_the_compute_dtype(monkeypatch):
    import torch

    from studio import models
    from studio.config import ModelSpec

    spec = ModelSpec(quantization="nf4", compute_dtype="bf16")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert models._quant_config(spec).bnb_4bit_quant_storage == torch.uint8  # bitsandbytes' default
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert models._quant_config(spec).bnb_4bit_quant_storage == torch.bfloat16
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert models._quant_config(spec).bnb_4bit_quant_storage == torch.bfloat16
