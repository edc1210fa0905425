"""Training levers: the chunked loss (studio.losses) equal to the plain loss and its gradients, and each lever's curve."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_model, write_chat_rows
from studio import losses, runs, training
from studio.config import RunConfig, TrainSpec
from studio.train_parts import OptimizerInBackward, build_args


def _plain(hidden, weight, labels):
    """transformers' way: logits everywhere, upcast to fp32, cross-entropy summed over loss tokens."""
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=losses.IGNORE, reduction="sum")


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunked_equals_plain_loss_and_gradient(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(2, 33, 16, requires_grad=True)
    weight = torch.randn(50, 16)
    labels = torch.randint(0, 50, (2, 33))
    labels[0, :9] = losses.IGNORE  # a prompt without loss
    labels[1, 20:] = losses.IGNORE  # padding
    want = _plain(hidden, weight, labels)
    (want_grad,) = torch.autograd.grad(want * 0.37, hidden)
    got = losses.chunked_lm_loss(hidden, weight, labels, chunk)
    (got_grad,) = torch.autograd.grad(got * 0.37, hidden)  # a scaled loss scales the gradient
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-5)
    assert got_grad[1, 20:].abs().sum() == 0  # positions without a next-token label get nothing


def test_bf16_autocast_matches_the_plain_head_under_autocast():
    torch.manual_seed(0)
    hidden = torch.randn(1, 40, 32, requires_grad=True)
    weight = torch.randn(300, 32) * 0.2
    labels = torch.randint(0, 300, (1, 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = _plain(hidden, weight, labels)
        got = losses.chunked_lm_loss(hidden, weight, labels, 16)
    (want_grad,) = torch.autograd.grad(want, hidden)
    (got_grad,) = torch.autograd.grad(got, hidden)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=2e-3)
    torch.testing.assert_close(got_grad, want_grad, rtol=3e-2, atol=3e-3)


def test_no_loss_token_gives_zero_and_a_trained_head_is_refused():
    hidden = torch.randn(1, 5, 8, requires_grad=True)
    labels = torch.full((1, 5), losses.IGNORE)
    loss = losses.chunked_lm_loss(hidden, torch.randn(20, 8), labels, 4)
    loss.backward()
    assert loss.item() == 0 and hidden.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="plain loss"):
        losses.chunked_lm_loss(hidden, torch.randn(20, 8, requires_grad=True), labels, 4)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_model_loss_through_hidden_states_equals_the_model_s_own(family):
    model = tiny_model(family)
    model.requires_grad_(False)
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)  # something below the head trains
    ids = torch.randint(0, 500, (2, 24))
    labels = ids.clone()
    labels[:, :5] = losses.IGNORE
    want = model(input_ids=ids, labels=labels).loss
    (want_grad,) = torch.autograd.grad(want, model.model.layers[0].mlp.up_proj.weight)
    head = losses.head_for_chunked_loss(model)
    out = model(input_ids=ids, output_hidden_states=True, logits_to_keep=torch.empty(0, dtype=torch.long))
    assert out.logits.numel() == 0  # the model made no logits at all
    got = losses.chunked_lm_loss(out.hidden_states[-1], head.weight, labels, 8) / (labels[:, 1:] != -100).sum()
    (got_grad,) = torch.autograd.grad(got, model.model.layers[0].mlp.up_proj.weight)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6)


def test_head_is_refused_when_it_trains_or_post_processes():
    model = tiny_model("llama")
    model.requires_grad_(False)
    assert losses.head_for_chunked_loss(model) is model.lm_head
    model.config.final_logit_softcapping = 30.0
    assert losses.head_for_chunked_loss(model) is None
    model.config.final_logit_softcapping = None
    model.lm_head.weight.requires_grad_(True)
    assert losses.head_for_chunked_loss(model) is None


def test_estimate_term_is_below_the_plain_logits_at_long_sequences():
    fwd, bwd = losses.chunked_loss_bytes(vocab=49_152, hidden=576, loss_tokens=2048, chunk=256, c_bytes=2)
    plain_bwd = 2048 * 49_152 * 12  # activations.logits' backward term
    assert bwd < plain_bwd / 100 and fwd < plain_bwd / 4


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory):
    return write_chat_rows(tmp_path_factory.mktemp("levers") / "chat.jsonl", 16)


def _curve(tiny_dirs, chat_file, tmp_path, name, train_on, model=None, method=None, **train):
    cfg = RunConfig.from_dict({
        "model": {"id": str(tiny_dirs["llama"]), **(model or {})},
        "method": method or {"name": "lora", "r": 4, "targets": ["all-linear"]},
        "data": {"path": str(chat_file), "packing": True, "train_on": train_on},
        "train": {"max_steps": 4, "micro_batch_size": 1, "grad_accum": 2, "max_seq_len": 128,
                  "learning_rate": 1e-2, "precision": "fp32", "output_dir": str(tmp_path / "runs"),
                  "run_name": name, "sample_hardware": False, **train}})
    job = training.TrainingJob(cfg).start()
    assert job.wait(300) and job.state == "done", job.snapshot().get("message")
    return runs.loss_curve(job.run_dir)["loss"]


@pytest.fixture(scope="module")
def plain_curve(tiny_dirs, chat_file, tmp_path_factory):
    """Every lever off (today's path), loss on every token: the curve each lever is held against."""
    curve = _curve(tiny_dirs, chat_file, tmp_path_factory.mktemp("plain"), "plain", "all")
    assert len(curve) == 4 and curve[-1] < curve[0]  # it learns, so an equal curve says something
    return curve


@pytest.mark.parametrize("train_on", ["assistant", "all"])
def test_a_run_with_the_chunked_loss_has_the_same_curve(tiny_dirs, chat_file, tmp_path, monkeypatch, train_on,
                                                        plain_curve):
    calls = []
    real = losses.chunked_lm_loss
    monkeypatch.setattr(losses, "chunked_lm_loss", lambda *a: calls.append(a[3]) or real(*a))
    off = plain_curve if train_on == "all" else _curve(tiny_dirs, chat_file, tmp_path, f"off-{train_on}", train_on)
    if train_on != "all":
        assert calls == []  # 0 (the default) is today's path
    on = _curve(tiny_dirs, chat_file, tmp_path, f"on-{train_on}", train_on, loss_chunk_tokens=16)
    assert calls and set(calls) == {16}
    assert on == pytest.approx(off, rel=1e-5, abs=1e-6)


def test_the_setting_reaches_the_trainer_and_is_checked(tmp_path):
    cfg = RunConfig.from_dict({"train": {"loss_chunk_tokens": 512, "precision": "fp32"}})
    args = build_args(cfg, tmp_path, lr=1e-4, total_steps=10, has_eval=False)
    assert args.loss_chunk_tokens == 512
    assert build_args(RunConfig.from_dict({"train": {"precision": "fp32"}}), tmp_path, lr=1e-4, total_steps=10,
                      has_eval=False).loss_chunk_tokens == 0
    assert any(p.startswith("train.loss_chunk_tokens") for p in TrainSpec(loss_chunk_tokens=-1).problems("train"))


def test_the_estimate_counts_the_chunked_loss_instead_of_whole_logits():
    from conftest import tiny_config
    from studio import memory
    from studio.models import ArchSpec

    arch = ArchSpec.from_config(tiny_config("llama"))
    plain = RunConfig.from_dict({"train": {"max_seq_len": 1024, "micro_batch_size": 2, "precision": "fp32"}})
    chunked = plain.with_overrides(["train.loss_chunk_tokens=128"])
    a, b = memory.estimate(arch, plain, device="cpu"), memory.estimate(arch, chunked, device="cpu")
    assert b.logits < a.logits / 4 and b.allocated_peak_bytes < a.allocated_peak_bytes
    assert b.logits == losses.chunked_loss_bytes(arch.vocab_size, arch.hidden_size, 2048, 128, 4)[1]


def test_fused_adamw_gives_the_same_curve_and_reaches_the_trainer(tiny_dirs, chat_file, tmp_path, plain_curve):
    fused = _curve(tiny_dirs, chat_file, tmp_path, "fused", "all", optimizer="adamw_fused")
    assert fused == pytest.approx(plain_curve, rel=1e-4, abs=1e-5)
    cfg = RunConfig.from_dict({"train": {"optimizer": "adamw_fused", "precision": "fp32"}})
    assert build_args(cfg, tmp_path, lr=1e-4, total_steps=10, has_eval=False).optim == "adamw_torch_fused"


def test_gradient_checkpointing_gives_the_same_curve(tiny_dirs, chat_file, tmp_path, plain_curve, monkeypatch):
    from transformers import modeling_utils

    calls = []
    real = modeling_utils.checkpoint  # what the model's blocks call when checkpointing is on
    monkeypatch.setattr(modeling_utils, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    on = _curve(tiny_dirs, chat_file, tmp_path, "checkpointing", "all", gradient_checkpointing=True)
    assert calls  # the blocks were recomputed in backward
    assert on == pytest.approx(plain_curve, rel=1e-5, abs=1e-6)


def test_eager_attention_gives_the_same_curve_as_sdpa(tiny_dirs, chat_file, tmp_path, plain_curve):
    eager = _curve(tiny_dirs, chat_file, tmp_path, "eager", "all", model={"attn_implementation": "eager"})
    assert eager == pytest.approx(plain_curve, rel=1e-4, abs=1e-5)


def test_compile_reaches_the_trainer_and_is_off_by_default(tmp_path):
    args = build_args(RunConfig.from_dict({"train": {"compile": True, "precision": "fp32"}}), tmp_path, lr=1e-4,
                      total_steps=10, has_eval=False)
    assert args.torch_compile is True
    assert build_args(RunConfig.from_dict({"train": {"precision": "fp32"}}), tmp_path, lr=1e-4, total_steps=10,
                      has_eval=False).torch_compile is False


@pytest.mark.slow
def test_compiled_run_gives_the_same_curve(tiny_dirs, chat_file, tmp_path, plain_curve, monkeypatch):
    calls = []
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    compiled = _curve(tiny_dirs, chat_file, tmp_path, "compiled", "all", compile=True)
    assert calls  # the model went through torch.compile
    assert compiled == pytest.approx(plain_curve, rel=1e-3, abs=1e-4)


def _twin_models():
    torch.manual_seed(0)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))  # noqa: E731
    a = make()
    b = make()
    b.load_state_dict(a.state_dict())
    return a, b


def _scheduled(opt):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / 10)


def test_optimizer_in_backward_steps_like_the_optimizer_and_frees_each_gradient():
    plain_model, model = _twin_models()
    plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-2, weight_decay=0.1)
    inside = OptimizerInBackward(torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1))
    schedules = [_scheduled(plain), _scheduled(inside)]
    x, y = torch.randn(5, 6), torch.randn(5, 3)
    for _ in range(3):
        F.mse_loss(plain_model(x), y).backward()
        plain.step()
        plain.zero_grad()
        F.mse_loss(model(x), y).backward()
        assert all(p.grad is None for p in model.parameters())  # stepped and freed inside backward
        inside.step()  # what Trainer calls: nothing left to do
        for schedule in schedules:
            schedule.step()
    for got, want in zip(model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(got, want)
    assert inside.param_groups[0]["lr"] == pytest.approx(plain.param_groups[0]["lr"])  # the schedule reached it

    saved = inside.state_dict()
    again = OptimizerInBackward(torch.optim.AdamW(_twin_models()[1].parameters(), lr=1e-2))
    again.load_state_dict(saved)
    assert again.optimizers[0].state_dict()["state"][0]["step"] == 3  # resume keeps each tensor's moments
    again.param_groups[0]["lr"] = 0.5  # a scheduler after loading (accelerate loads it once) still reaches them
    assert again.optimizers[0].param_groups[0]["lr"] == 0.5
    inside.remove_hooks()
    F.mse_loss(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())  # after training backward is plain again


@pytest.mark.parametrize("method", [{"name": "full"}, {"name": "lora", "r": 4, "targets": ["all-linear"]}],
                         ids=["full", "lora"])
def test_optimizer_in_backward_gives_the_same_curve(tiny_dirs, chat_file, tmp_path, monkeypatch, method):
    calls = []
    real = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    settings = {"grad_accum": 1, "max_grad_norm": 0.0, "method": method}
    off = _curve(tiny_dirs, chat_file, tmp_path, f"off-{method['name']}", "all", **settings)
    assert len(calls) == 4 and off[-1] < off[0]  # one step of one optimizer for all tensors, and it learns
    calls.clear()
    on = _curve(tiny_dirs, chat_file, tmp_path, f"in-backward-{method['name']}", "all", optimizer_in_backward=True,
                **settings)
    assert len(calls) > 4 * 8  # one optimizer per trained tensor, each stepped in every backward
    assert on == pytest.approx(off, rel=1e-5, abs=1e-6)


def test_optimizer_in_backward_is_refused_where_it_cannot_work(tmp_path):
    def problems(**train):
        return [p for p in TrainSpec(optimizer_in_backward=True, **train).problems("train")
                if p.startswith("train.optimizer_in_backward")]

    assert problems(max_grad_norm=0.0) == []
    assert problems() == ["train.optimizer_in_backward: needs max_grad_norm 0 (clipping needs every gradient at once)"]
    assert "grad_accum 1" in problems(max_grad_norm=0.0, grad_accum=4)[0]
    assert problems(max_grad_norm=0.0, optimizer="adamw_8bit") == [
        "train.optimizer_in_backward: works with adamw, adamw_fused, sgd, not adamw_8bit"]
    cfg = RunConfig.from_dict({"train": {"optimizer_in_backward": True, "max_grad_norm": 0, "precision": "fp32"}})
    assert build_args(cfg, tmp_path, lr=1e-4, total_steps=10, has_eval=False).optimizer_in_backward is True
    with pytest.raises(Exception, match="sft runs only"):
        RunConfig.from_dict({"train": {"optimizer_in_backward": True, "max_grad_norm": 0, "objective": "dpo"}})


def test_the_estimate_holds_one_gradient_with_the_optimizer_in_backward():
    from conftest import tiny_config
    from studio import memory
    from studio.models import ArchSpec

    config = tiny_config("llama")
    config.num_hidden_layers = 16  # the largest tensor (the embedding) a small share of all, as in real models
    arch = ArchSpec.from_config(config)
    plain = RunConfig.from_dict({"method": {"name": "full"}, "train": {  # short rows: the gradients' share shows
        "max_grad_norm": 0, "precision": "fp32", "max_seq_len": 32, "micro_batch_size": 1}})
    inside = plain.with_overrides(["train.optimizer_in_backward=true"])
    a, b = memory.estimate(arch, plain, device="cpu"), memory.estimate(arch, inside, device="cpu")
    assert a.gradients == 4 * a.trainable_params  # every fp32 gradient at the optimizer step
    assert b.gradients == 4 * arch.vocab_size * arch.hidden_size  # the embedding, the largest tensor, alone
    assert "optimizer_step" not in b.phases and b.allocated_peak_bytes < a.allocated_peak_bytes
