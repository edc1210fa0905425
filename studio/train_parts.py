"""The pieces TrainingJob puts around transformers' Trainer: its arguments, callbacks and token counting.

Kept apart from training.py so the job itself reads as setup, train, save, cleanup.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from studio import losses, process, runs
from studio.config import NOTHING_TO_TRAIN, ConfigError, RunConfig
from studio.hardware import resolve_precision
from studio.rewards import chart_values

__all__ = ["OPTIMIZERS", "REWARD_METRICS", "OptimizerInBackward", "StudioArguments", "build_args", "memory_now",
           "Progress", "EarlyStop", "StudioTrainer", "TokenCountingCollator", "total_steps", "train_batches"]

OPTIMIZERS = {"adamw": "adamw_torch", "adamw_fused": "adamw_torch_fused", "adamw_8bit": "adamw_bnb_8bit",
              "paged_adamw_8bit": "paged_adamw_8bit", "paged_adamw_32bit": "paged_adamw_32bit", "sgd": "sgd",
              "adafactor": "adafactor", "lion": "lion_32bit", "lion_8bit": "lion_8bit"}
"""TrainSpec.optimizer -> TrainingArguments.optim."""

REWARD_METRICS = {"rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy"}
"""What TRL's preference trainers log (chosen reward minus rejected, share of pairs ranked right) -> the
names in metrics.jsonl, the events and the chart."""


@dataclass
class StudioArguments(TrainingArguments):
    """TrainingArguments and the studio's own step settings (TrainSpec's levers)."""

    loss_chunk_tokens: int = field(default=0, metadata={"help": "loss tokens per chunk of the loss; 0: whole"})
    optimizer_in_backward: bool = field(default=False, metadata={"help": "step each tensor from its gradient hook"})


def build_args(cfg: RunConfig, output_dir: Path, *, lr: float, total_steps: int, has_eval: bool,
               args_class: type = StudioArguments, **extra) -> TrainingArguments:
    """TrainingArguments from the TrainSpec. Final saving is the studio's own (methods.save_result).

    ``args_class`` is a TrainingArguments subclass (StudioArguments, or a TRL trainer's config) and ``extra``
    its own fields.
    """
    t = cfg.train
    precision = resolve_precision(t.precision)
    eval_steps = t.eval_steps or max(1, total_steps // 5)
    # Periodic checkpoints make resume (and recovery from a crash) possible; two are kept so a
    # save cut short leaves the one before intact.
    save_steps = t.save_steps or max(10, math.ceil(total_steps / 4))
    if t.keep_best and has_eval:
        # Trainer tracks the lowest eval loss, keeps that checkpoint through the rotation and loads it back when
        # training ends, so the final save writes the best step's result; it needs a checkpoint at each evaluation
        save_steps = t.save_steps or eval_steps
        extra = {"load_best_model_at_end": True, "metric_for_best_model": "eval_loss", "greater_is_better": False,
                 **extra}
    if issubclass(args_class, StudioArguments):  # the studio's own trainer reads its levers from here
        extra = {"loss_chunk_tokens": t.loss_chunk_tokens, "optimizer_in_backward": t.optimizer_in_backward, **extra}
    return args_class(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.micro_batch_size,
        per_device_eval_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=float(t.warmup_ratio),  # a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=OPTIMIZERS[t.optimizer],
        neftune_noise_alpha=t.neftune_alpha or None,  # Trainer adds the noise in training forwards only
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        torch_compile=t.compile,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=t.seed,
        logging_steps=t.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,  # the collator's rows are exactly what the model takes
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        log_level="warning",
        **extra,
    )


def train_batches(rows, size: int, pad_id: int):
    """The run's training rows in micro-batches, as the model takes them (for data-driven init: EVA, CorDA)."""
    from studio import data

    return torch.utils.data.DataLoader(rows, batch_size=size, collate_fn=data.Collator(pad_id))


def memory_now() -> dict:
    """Memory in bytes: CUDA allocated/reserved/peak with a GPU, else the process's resident set."""
    if torch.cuda.is_available():
        return {"memory_bytes": torch.cuda.memory_allocated(), "memory_reserved_bytes": torch.cuda.memory_reserved(),
                "peak_memory_bytes": torch.cuda.max_memory_allocated()}
    import psutil

    return {"memory_bytes": psutil.Process().memory_info().rss}


def total_steps(cfg: RunConfig, rows: int) -> int:
    """Optimizer steps the run will take, computed the way Trainer does."""
    t = cfg.train
    if t.max_steps:
        return t.max_steps
    if t.trains_nothing():
        raise ConfigError(NOTHING_TO_TRAIN)
    world = process.world_size()
    batches = math.ceil(rows / (t.micro_batch_size * world))
    per_epoch = max(1, math.ceil(batches / t.grad_accum))
    return max(1, math.ceil(per_epoch * t.epochs))


class TokenCountingCollator:
    """Wraps the data collator and adds the batch's real (non-pad) token count as ``real_tokens``.

    The rows handed in carry no padding (packed rows are full, unpacked rows are unpadded), so their
    lengths are the real tokens; counting before padding is exact even when pad == eos.
    """

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collator(features)
        batch["real_tokens"] = sum(len(f["input_ids"]) for f in features)
        return batch


class OptimizerInBackward(torch.optim.Optimizer):
    """Runs ``built`` one trained tensor at a time, inside backward, and frees each gradient once applied.

    Every trained tensor gets its own optimizer of ``built``'s class and group settings, stepped from a
    post-accumulate-grad hook as soon as autograd has made its gradient (torchtune's optimizer-in-backward):
    at no time do all the gradients exist. ``step`` and ``zero_grad`` have nothing left to do. The
    learning-rate scheduler reaches the inner optimizers through ``param_groups``, which are theirs. Clipping
    by the global norm and gradient accumulation cannot work this way (config refuses them).
    """

    def __init__(self, built: torch.optim.Optimizer):
        self.optimizers, self._hooks = [], []
        for group in built.param_groups:
            settings = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                if p.requires_grad:
                    self.optimizers.append(type(built)([{**settings, "params": [p]}]))
                    self._hooks.append(p.register_post_accumulate_grad_hook(self._stepper(self.optimizers[-1])))
        super().__init__([p for o in self.optimizers for p in o.param_groups[0]["params"]], dict(built.defaults))
        self.param_groups = [o.param_groups[0] for o in self.optimizers]

    @staticmethod
    def _stepper(opt):
        def step(_param):
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    def step(self, closure=None):
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True):
        pass

    def state_dict(self) -> dict:
        return {"in_backward": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for opt, own in zip(self.optimizers, state_dict["in_backward"], strict=True):
            opt.load_state_dict(own)
        self.param_groups = [o.param_groups[0] for o in self.optimizers]  # loading made new group dicts

    def remove_hooks(self) -> None:
        """Stop stepping from backward (after training: the model may go on to other work)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []


class StudioTrainer(Trainer):
    """Trainer that counts real tokens and computes logits only where a token carries loss.

    The language-model head is a large share of a small model's work (SmolLM2-135M: 28M of its ~134M
    multiply-adds per token) and its logits are the largest activation. With loss on answers only,
    most positions carry no loss, so their logits are never made (``logits_to_keep`` with the
    positions that do). The loss is the same sum over the same tokens, normalised the way Trainer does.
    """

    studio_tokens: int = 0
    sparse_logits: bool = True
    base_guard = None  # base_guard.Guards when train.kl_to_base or train.ewc is above 0
    loraplus_ratio: float = 0.0  # LoRA+: B matrices in their own parameter group at this multiple of the lr

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return super().create_optimizer(model)
        if not self.loraplus_ratio:
            super().create_optimizer(model)
        else:
            from peft.optimizers import create_loraplus_optimizer

            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            kwargs.pop("lr", None)
            self.optimizer = create_loraplus_optimizer(self.model, cls, lr=self.args.learning_rate,
                                                       loraplus_lr_ratio=self.loraplus_ratio,
                                                       weight_decay=self.args.weight_decay, **kwargs)
        if getattr(self.args, "optimizer_in_backward", False):
            self.optimizer = OptimizerInBackward(self.optimizer)
        return self.optimizer

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:  # the hooks step only while this trainer trains
            inner = getattr(self.optimizer, "optimizer", self.optimizer)  # under accelerate's wrapper
            if isinstance(inner, OptimizerInBackward):
                inner.remove_hooks()

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.studio_tokens += int(inputs.pop("real_tokens", 0))
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.base_guard is not None:  # the guards (studio.base_guard): the KL needs every position's logits
            return self.base_guard.loss(super().compute_loss, model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.get("labels")
        if return_outputs or labels is None or not _takes_logits_to_keep(model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        chunk = getattr(self.args, "loss_chunk_tokens", 0)
        head = losses.head_for_chunked_loss(model) if chunk else None
        if head is not None:  # no logits from the model at all: the loss makes them a chunk at a time
            loss = losses.chunked_model_loss(model, inputs, head, chunk)
            return self._normalise(loss, labels[:, 1:], num_items_in_batch)
        if not self.sparse_logits:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        targets = labels[:, 1:]  # logits at position t predict the token at t + 1
        keep = (targets != -100).any(0).nonzero().squeeze(1)
        if keep.numel() > 0.75 * targets.shape[1]:  # nearly every position trains: nothing to save
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
        logits = outputs.logits.float()
        wanted = targets[:, keep]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), wanted.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        return self._normalise(loss, wanted, num_items_in_batch)

    def _normalise(self, loss, targets, num_items_in_batch):
        """A summed loss divided the way Trainer divides its own (per token, across devices)."""
        if num_items_in_batch is None:
            return loss / (targets != -100).sum().clamp(min=1)
        loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device)
        if self.args.average_tokens_across_devices:  # mirror Trainer: it divides num_items by the processes
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss

    def prediction_step(self, model, inputs, *args, **kwargs):
        inputs.pop("real_tokens", None)
        return super().prediction_step(model, inputs, *args, **kwargs)


def _takes_logits_to_keep(model) -> bool:
    """Whether the causal LM under any wrappers (PEFT, DDP) accepts a tensor ``logits_to_keep``."""
    import inspect

    inner = model
    while hasattr(inner, "module"):  # DDP / FSDP wrappers
        inner = inner.module
    if hasattr(inner, "get_base_model"):  # PEFT
        config = getattr(inner, "active_peft_config", None)
        if getattr(config, "is_prompt_learning", False):  # virtual tokens shift every position
            return False
        inner = inner.get_base_model()
    cached = getattr(inner, "_studio_keeps_logits", None)
    if cached is None:
        try:
            cached = "logits_to_keep" in inspect.signature(inner.forward).parameters
        except (TypeError, ValueError):
            cached = False
        inner._studio_keeps_logits = cached
    return cached


class Progress(TrainerCallback):
    """Publishes progress to the run's log (snapshot, events, metrics.jsonl) and reads the job's stop flag.

    Args:
        log: the job's run_log.RunLog.
        stop: a threading.Event, set when the run is asked to stop.
        tokens: returns this process's real tokens so far (the trainer's count).
    """

    def __init__(self, log, stop, tokens):
        self.log, self.stop, self.tokens = log, stop, tokens
        self.last_t = 0.0
        self.last_tokens = 0
        self.peak = 0

    def on_train_begin(self, args, state, control, **kw):
        self.last_t = time.perf_counter()
        self.last_tokens = self.tokens()
        self.log.train_began(state.global_step, state.max_steps)

    def on_step_end(self, args, state, control, **kw):
        self.log.step_ended(state.global_step, state.max_steps, state.epoch, self.tokens())
        if self.stop.is_set():
            control.should_training_stop = True
            control.should_save = True  # a checkpoint at the stop point, so Resume starts exactly here

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "train_runtime" in logs:  # the summary Trainer logs at the very end
            return
        now = time.perf_counter()
        mem = memory_now()
        self.peak = max(self.peak, mem.get("peak_memory_bytes", mem["memory_bytes"]))
        row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0, 4)}
        if "eval_loss" in logs:
            row["eval_loss"] = logs["eval_loss"]
            row.update({f"eval_{ours}": logs[f"eval_{theirs}"] for theirs, ours in REWARD_METRICS.items()
                        if f"eval_{theirs}" in logs})
            self.log.update(eval_loss=logs["eval_loss"])
            self.log.event("eval", **row)
        if "loss" in logs:
            local = self.tokens()
            rate = (local - self.last_tokens) / max(now - self.last_t, 1e-9)
            self.last_t, self.last_tokens = now, local
            # every process logs the same step: the run's token count and throughput are their sums
            rate, tokens = process.all_reduce_sums(rate, local)
            tokens = int(tokens)
            row.update(loss=logs["loss"], learning_rate=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"),
                       tokens_per_second=round(rate, 2), tokens=tokens, **mem, time=round(time.time(), 3))
            rewards = {ours: logs[theirs] for theirs, ours in REWARD_METRICS.items() if theirs in logs}
            rewards.update(chart_values(logs))  # GRPO: total reward, KL, each reward's mean
            row.update(rewards)
            snap = self.log.snapshot()
            self.log.update(loss=logs["loss"], learning_rate=logs.get("learning_rate"),
                            tokens_per_second=round(rate, 2), memory_bytes=mem["memory_bytes"],
                            peak_memory_bytes=self.peak, **rewards)
            for guard in ("kl_to_base", "ewc"):  # the stay-close-to-base terms, put there by their callbacks
                if guard in logs:
                    row[guard] = logs[guard]
            self.log.event("log", total=state.max_steps, eta_seconds=snap.get("eta_seconds"), **row)
        if len(row) > 2 and state.is_world_process_zero:
            runs.append_metrics(self.log.run_dir, row)
            if "loss" in row:
                runs.write_state(self.log.run_dir, step=state.global_step, total_steps=state.max_steps,
                                 peak_memory_bytes=self.peak)


class EarlyStop(TrainerCallback):
    """Stops when the eval loss has not improved for ``patience`` evaluations (no best-model reload needed)."""

    def __init__(self, patience: int, log=None):
        self.patience, self.log = patience, log
        self.best, self.bad = float("inf"), 0

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if loss < self.best:
            self.best, self.bad = loss, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True
            if self.log is not None:
                self.log.event("message", text=f"early stop: eval loss has not improved for {self.bad} evaluations")
