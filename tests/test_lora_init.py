"""LoRA initialisations (PiSSA, OLoRA, CorDA, EVA, LoftQ), LoRA+ learning rates, NEFTune noise and the
memory-saving optimizers: each one's effect, not only that it runs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model
from test_training import make_cfg, run_job
from transformers import TrainerCallback, TrainingArguments

from studio import cli, memory, methods, models, preflight, runs
from studio.config import MethodSpec, ModelSpec, RunConfig
from studio.method_defs.lora_init import LOFTQ_NEEDS_CUDA
from studio.methods import Context
from studio.models import ArchSpec
from studio.train_parts import StudioTrainer, build_args


def _ids(seed: int) -> torch.Tensor:
    return torch.randint(8, 100, (2, 16), generator=torch.Generator().manual_seed(seed))


def _batches():
    for seed in range(10, 14):
        ids = _ids(seed)
        yield {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


@torch.no_grad()
def _logits(model) -> torch.Tensor:
    return model.eval()(input_ids=_ids(1)).logits


def _train(model, steps: int = 3) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        model(input_ids=_ids(0), labels=_ids(0)).loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("init", ["pissa", "pissa_fast", "olora", "corda"])
def test_residual_inits_start_at_the_base_and_export_onto_the_true_base(init, tmp_path):
    spec = MethodSpec("lora", {"r": 4, "init": init, "svd_iters": 4})
    base = _logits(tiny_model("llama"))
    seen: list[str] = []
    model = methods.get("lora").apply(tiny_model("llama"), spec, Context(batches=_batches, progress=seen.append))
    torch.testing.assert_close(_logits(model), base, rtol=0, atol=1e-4)  # the adapter holds what left the base
    with methods.adapter_off(model):  # inside the model the base is a residual now, not the true one
        assert not torch.allclose(_logits(model), base, atol=1e-3)
    _train(model)
    trained = _logits(model)
    assert not torch.allclose(trained, base, atol=1e-3)
    folder = methods.save_result(model, spec, tmp_path / "adapter")
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 8  # plain LoRA, rank 2r
    loaded = methods.load_result(tiny_model("llama"), folder)  # the untouched base
    torch.testing.assert_close(_logits(loaded), trained, rtol=0, atol=1e-4)
    with methods.adapter_off(loaded):
        torch.testing.assert_close(_logits(loaded), base)
    merged = methods.merge(loaded)
    torch.testing.assert_close(_logits(merged), trained, rtol=0, atol=1e-4)
    assert bool(seen) == (init == "corda")  # only CorDA reads data here


def test_data_inits_refuse_without_data():
    for init in ("eva", "corda"):
        with pytest.raises(methods.ConfigError, match=f"{init} initialises from the run's data"):
            methods.get("lora").apply(tiny_model("llama"), MethodSpec("lora", {"init": init}), Context())


def test_eva_runs_its_data_pass_in_the_engine_and_trains(tiny_dirs, chat_file, tmp_path):  # noqa: F811
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=4, run_name="eva")
    cfg.method = MethodSpec("lora", {"r": 4, "init": "eva", "targets": ["all-linear"]})
    job = run_job(cfg)
    assert job.state == "done", job.snapshot().get("message")
    said = [e.get("message", "") for e in job.events() if e["type"] == "state"]
    assert any("EVA initialisation: data pass, batch 1" in m for m in said)
    losses = [r["loss"] for r in runs.read_metrics(job.run_dir)]
    assert losses[-1] < losses[0]
    a = [p for n, p in job.model.named_parameters() if "lora_A" in n]
    plain = methods.get("lora").apply(tiny_model("llama"), MethodSpec("lora", {"r": 4, "targets": ["all-linear"]}),
                                      Context())
    # EVA's A rows are unit singular vectors of the activations, not Kaiming-uniform draws
    assert a and all(torch.allclose(p.norm(dim=1), torch.ones(p.shape[0]), atol=0.05) for p in a[:2])
    assert not all(torch.allclose(q.norm(dim=1), torch.ones(q.shape[0]), atol=0.05)
                   for n, q in plain.named_parameters() if "lora_A" in n)


def test_loftq_absorbs_the_quantisation_error(tiny_dirs):
    def error(init: str) -> float:
        spec = MethodSpec("qlora", {"r": 8, "init": init, "compute_dtype": "fp32", "gradient_checkpointing": False})
        base, _ = models.load(methods.model_spec_for(ModelSpec(id=str(tiny_dirs["llama"]), dtype="fp32"), spec))
        model = methods.get("qlora").apply(base, spec, Context())
        return (_logits(model) - _logits(tiny_model("llama"))).abs().mean().item()

    if not torch.cuda.is_available():  # PEFT's LoftQ computes on CUDA only: here the refusal is the behaviour
        with pytest.raises(methods.ConfigError, match="LoftQ runs on a CUDA GPU only"):
            error("loftq")
        return
    assert error("loftq") < 0.8 * error("default")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_loftq_without_cuda_is_one_line_before_anything_loads(tiny_dirs, chat_file, tmp_path, capsys):  # noqa: F811
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path)
    cfg.method = MethodSpec("qlora", {"r": 4, "init": "loftq"})
    assert preflight.problems(cfg) == [LOFTQ_NEEDS_CUDA]
    assert preflight.problems(cfg, machine=False) == []  # planning for a GPU machine: no objection
    cfg.method = MethodSpec("qlora", {"r": 4})
    assert LOFTQ_NEEDS_CUDA not in preflight.problems(cfg)
    preset = tmp_path / "loftq.yaml"
    preset.write_text(json.dumps({**make_cfg(tiny_dirs, chat_file, tmp_path).to_dict(),
                                  "method": {"name": "qlora", "r": 4, "init": "loftq"}}))
    assert cli.main(["train", str(preset), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == [f"error: {LOFTQ_NEEDS_CUDA}"]
    assert not list((tmp_path / "runs").glob("*/adapter"))


def test_loraplus_puts_b_in_its_own_group_at_the_ratio(tmp_path):
    model = methods.get("lora").apply(tiny_model("llama"), MethodSpec("lora", {"r": 4}), Context())
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, use_cpu=True, report_to=[])
    trainer = StudioTrainer(model=model, args=args)
    trainer.loraplus_ratio = 16.0
    groups = trainer.create_optimizer().param_groups
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    b = [p for n, p in named.items() if "lora_B" in n]
    a = [p for n, p in named.items() if "lora_A" in n]
    assert b and a and {lr_of[id(p)] for p in a} == {1e-3}
    assert all(lr_of[id(p)] == pytest.approx(16e-3) for p in b)
    assert not any(g["params"] and set(map(id, g["params"])) & set(map(id, a)) and set(map(id, g["params"])) &
                   set(map(id, b)) for g in groups)  # no group mixes A and B


def test_loraplus_is_refused_for_methods_without_b(tiny_dirs, chat_file, tmp_path):  # noqa: F811
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, loraplus_ratio=16.0)
    assert preflight.problems(cfg) == []
    cfg.method = MethodSpec("ia3")
    assert any(p.startswith("train.loraplus_ratio: LoRA+") for p in preflight.problems(cfg))


class _NoiseProbe(TrainerCallback):
    """At a training step, looks at the embedding layer in training and in eval mode."""

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        emb, ids = model.get_input_embeddings(), _ids(2)
        with torch.no_grad():
            emb.train()
            self.train_pair = emb(ids), emb(ids)
            emb.eval()
            self.eval_pair = emb(ids), emb(ids)
            self.table = emb.weight[ids].clone()
            emb.train()


def test_neftune_adds_noise_only_in_training(tiny_dirs, chat_file, tmp_path):  # noqa: F811
    assert build_args(make_cfg(tiny_dirs, chat_file, tmp_path), tmp_path, lr=1e-3, total_steps=2,
                      has_eval=False).neftune_noise_alpha is None
    cfg = make_cfg(tiny_dirs, chat_file, tmp_path, max_steps=2, neftune_alpha=5.0, run_name="neftune")
    probe = _NoiseProbe()
    job = run_job(cfg, probe)
    assert job.state == "done", job.snapshot().get("message")
    noisy_a, noisy_b = probe.train_pair
    assert not torch.equal(noisy_a, noisy_b) and not torch.equal(noisy_a, probe.table)
    torch.testing.assert_close(probe.eval_pair[0], probe.table, rtol=0, atol=0)
    emb = job.model.get_input_embeddings().train()
    with torch.no_grad():  # after training Trainer has taken the hook off again
        assert torch.equal(emb(_ids(2)), emb(_ids(2)))


@pytest.mark.parametrize("optimizer,per_param", [("adamw", 8), ("lion", 4), ("lion_8bit", 1 + 4 / 256),
                                                  ("adafactor", 0)])
def test_memory_saving_optimizers_have_their_state_term(optimizer, per_param, tiny_dirs):
    arch = ArchSpec.from_config(tiny_model("llama").config)
    cfg = RunConfig.from_dict({"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora"},
                               "train": {"optimizer": optimizer}})
    n = methods.get("lora").trainable(arch, cfg.method)
    assert memory.estimate(arch, cfg, device="cpu").optimizer == int(n * per_param)
