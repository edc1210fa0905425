"""Stay close to the base: a loss term that keeps the tuned model's next-token distribution near the base's.

The term is KL(tuned || base) per trained position, averaged, on the very batch being trained. The base's
distribution comes from the same model with its adapter switched off (``methods.adapter_off``), so no second
copy of the weights is loaded. With LoRA's B initialised to zero the adapter starts as the identity, so the
term starts at zero and grows as the adapter moves away from the base::

    guard = BaseGuard(model, strength=cfg.train.kl_to_base)   # refuses methods with no base inside
    trainer.base_guard = guard                                 # StudioTrainer.compute_loss adds the term
    callbacks.insert(0, guard.callback())                      # logs its mean as ``kl_to_base``

Cost: one more forward pass per step, without gradients (no activations kept for backward).

EWC (elastic weight consolidation, Kirkpatrick et al. 2017) is the second guard, for every method and the only
one for methods that train the base weights themselves: ``strength / 2 * sum_i F_i (theta_i - theta*_i)^2`` over
the trained parameters, with ``theta*`` the start weights and ``F`` the diagonal Fisher information (mean squared
gradient of the loss) measured on general rows before training. Cost: two fp32 copies of the trained
parameters (anchor and Fisher), and a few forward and backward passes before the first step::

    ewc = EWC(model, strength=cfg.train.ewc, examples=general, collate=collator)
    trainer.base_guard = Guards([guard, ewc])   # each guard adds its term; both log their own curve
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from studio import data, methods
from studio.config import ConfigError, DataSpec, RunConfig

__all__ = ["METRIC", "EWC_METRIC", "BaseGuard", "EWC", "Guards", "kl_to_base", "fisher_diagonal",
           "for_run", "EWC_ROWS"]

METRIC = "kl_to_base"
EWC_METRIC = "ewc"
EWC_ROWS = 16  # general rows the Fisher is measured on: a few seconds before the first step on a small model


def _positions(inputs: dict, logits: torch.Tensor) -> torch.Tensor:
    """Mask of positions whose next token is trained (labels), else of real tokens (attention mask)."""
    labels = inputs.get("labels")
    if labels is not None:
        mask = torch.zeros(labels.shape, dtype=torch.bool, device=logits.device)
        mask[:, :-1] = labels[:, 1:] != -100  # logits at t predict the token at t + 1
        if mask.any():
            return mask
    attention = inputs.get("attention_mask")
    return attention.bool() if attention is not None else torch.ones(logits.shape[:2], dtype=torch.bool,
                                                                      device=logits.device)


def _kl_sum(model, inputs: dict, tuned_logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.no_grad(), methods.adapter_off(model):
        base_logits = model(**feed).logits.float()
    mask = _positions(inputs, tuned_logits)
    tuned = F.log_softmax(tuned_logits.float()[mask], dim=-1)
    base = F.log_softmax(base_logits[mask], dim=-1)
    return F.kl_div(base, tuned, log_target=True, reduction="sum"), int(mask.sum())


def kl_to_base(model, inputs: dict, tuned_logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(tuned || base) over the trained positions of ``inputs``; ``tuned_logits`` keep their gradient.

    The base's logits come from ``model`` itself inside ``methods.adapter_off`` (no gradient, no copy).
    """
    total, count = _kl_sum(model, inputs, tuned_logits)
    return total / max(count, 1)


class BaseGuard:
    """The KL-to-base term for one run: adds ``strength * KL`` to the training loss and keeps its values.

    Raises:
        ConfigError: the model's method replaced the base weights (full, freeze, bitfit): there is no base
            to switch to without a second copy.
    """

    def __init__(self, model, strength: float):
        spec = methods.method_of(model)
        if spec is None or methods.get(spec.name).switch_off is None:
            raise ConfigError(f"train.kl_to_base: {spec.name if spec else 'this model'} trains the base weights "
                              "themselves, so there is no base to compare with; use an adapter method or set it to 0")
        self.model, self.strength, self.values = model, float(strength), []

    def loss(self, compute, model, inputs, return_outputs=False, num_items_in_batch=None):
        """``compute`` is Trainer.compute_loss: its loss plus ``strength`` times the KL to the base."""
        loss, outputs = compute(model, inputs, True, num_items_in_batch)
        if not model.training:  # evaluation reports the task loss alone
            return (loss, outputs) if return_outputs else loss
        total, count = _kl_sum(self.model, inputs, outputs.logits)
        self.values.append(float(total.detach()) / max(count, 1))
        # normalised like the task loss: over the accumulated batch's trained tokens when Trainer counts them
        share = total / num_items_in_batch if num_items_in_batch else total / max(count, 1)
        loss = loss + self.strength * share
        return (loss, outputs) if return_outputs else loss

    def pop_mean(self) -> float | None:
        """The mean KL since the last call (None when no step ran)."""
        values, self.values = self.values, []
        return sum(values) / len(values) if values else None

    def callback(self) -> TrainerCallback:
        """A callback that puts the mean KL into the Trainer's logs as ``kl_to_base`` (place it first)."""
        return _LogMean(self, METRIC)


class _LogMean(TrainerCallback):
    """Puts a guard's mean term since the last log into the Trainer's logs under its own name."""

    def __init__(self, guard, name: str):
        self.guard, self.name = guard, name

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is not None and "loss" in logs:
            mean = self.guard.pop_mean()
            if mean is not None:
                logs[self.name] = round(mean, 9)


def fisher_diagonal(model, examples: list[dict], collate) -> dict[str, torch.Tensor]:
    """The diagonal Fisher information of the trained parameters: their squared loss gradient, averaged over
    ``examples`` (token rows, one at a time so each is its own sample), in fp32."""
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in trained.items()}
    was_training = model.training
    model.eval()  # no dropout: the gradient of the model as it stands
    try:
        for example in examples:
            batch = {k: v.to(next(iter(trained.values())).device) for k, v in collate([example]).items()
                     if isinstance(v, torch.Tensor)}
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for n, p in trained.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().float() ** 2 / len(examples)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return fisher


class EWC:
    """Elastic weight consolidation: ``strength / 2 * sum F (theta - theta*)^2`` joins the training loss.

    The anchor ``theta*`` is the trained parameters at construction (the start weights); ``fisher`` their
    importance for the base's general behaviour (``fisher_diagonal`` on general rows).
    """

    def __init__(self, model, strength: float, fisher: dict[str, torch.Tensor]):
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad and n in fisher}
        if not self.params:
            raise ConfigError("train.ewc: the model has no trained parameters to anchor")
        self.anchor = {n: p.detach().float().clone() for n, p in self.params.items()}
        self.fisher, self.strength, self.values = fisher, float(strength), []

    def penalty(self) -> torch.Tensor:
        """``1/2 sum F (theta - theta*)^2`` with its gradient to the parameters; exactly 0 at the start weights."""
        terms = [(self.fisher[n] * (p.float() - self.anchor[n]) ** 2).sum() for n, p in self.params.items()]
        return 0.5 * torch.stack(terms).sum()

    def loss(self, compute, model, inputs, return_outputs=False, num_items_in_batch=None):
        """``compute`` is Trainer.compute_loss (or another guard's): its loss plus ``strength`` times the penalty."""
        loss, outputs = compute(model, inputs, True, num_items_in_batch)
        if model.training:  # evaluation reports the task loss alone
            penalty = self.penalty()
            self.values.append(float(penalty.detach()))
            loss = loss + self.strength * penalty.to(loss.dtype)
        return (loss, outputs) if return_outputs else loss

    def pop_mean(self) -> float | None:
        """The mean penalty since the last call (None when no step ran)."""
        values, self.values = self.values, []
        return sum(values) / len(values) if values else None

    def callback(self) -> TrainerCallback:
        """A callback that puts the mean penalty into the Trainer's logs as ``ewc`` (place it first)."""
        return _LogMean(self, EWC_METRIC)

    def extra_bytes(self) -> int:
        """What the guard holds: the anchor and the Fisher, fp32 each."""
        return sum(8 * p.numel() for p in self.params.values())


class Guards:
    """Several guards on one loss: each adds its term to what the one inside it computed."""

    def __init__(self, guards: list):
        self.guards = list(guards)

    def loss(self, compute, model, inputs, return_outputs=False, num_items_in_batch=None):
        for guard in self.guards:
            compute = functools.partial(guard.loss, compute)
        return compute(model, inputs, return_outputs, num_items_in_batch)

    def callbacks(self) -> list[TrainerCallback]:
        return [g.callback() for g in self.guards]


def for_run(cfg: RunConfig, model, tokenizer) -> Guards | None:
    """The guards ``cfg.train`` asks for on ``model`` (KL to the base, EWC), or None when neither is on.

    EWC's Fisher is measured on the first ``EWC_ROWS`` rows of ``cfg.data.replay_path`` (general chat answers).

    Raises:
        ConfigError: the KL guard on a method with no base inside; unreadable general rows (one line each).
    """
    t, guards = cfg.train, []
    if t.kl_to_base > 0:
        guards.append(BaseGuard(model, t.kl_to_base))
    if t.ewc > 0:
        spec = DataSpec(path=cfg.data.replay_path, system_prompt=cfg.data.system_prompt, max_rows=EWC_ROWS)
        rows = data.load_rows(spec).rows
        tok = data.tokenize_rows(rows, tokenizer, max_len=t.max_seq_len, train_on=cfg.data.train_on)
        fisher = fisher_diagonal(model, tok.examples, data.Collator(tokenizer.pad_token_id))
        guards.append(EWC(model, t.ewc, fisher))
    return Guards(guards) if guards else None
