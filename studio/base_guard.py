"""Stay close to the base: a loss term that keeps the tuned model's next-token distribution near the base's.

The term is KL(tuned || base) per trained position, averaged, on the very batch being trained. The base's
distribution comes from the same model with its adapter switched off (``methods.adapter_off``), so no second
copy of the weights is loaded. With LoRA's B initialised to zero the adapter starts as the identity, so the
term starts at zero and grows as the adapter moves away from the base::

    guard = BaseGuard(model, strength=cfg.train.kl_to_base)   # refuses methods with no base inside
    trainer.base_guard = guard                                 # StudioTrainer.compute_loss adds the term
    callbacks.insert(0, guard.callback())                      # logs its mean as ``kl_to_base``

Cost: one more forward pass per step, without gradients (no activations kept for backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from studio import methods
from studio.config import ConfigError

__all__ = ["METRIC", "BaseGuard", "kl_to_base"]

METRIC = "kl_to_base"


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
        guard = self

        class _LogKL(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs is not None and "loss" in logs:
                    mean = guard.pop_mean()
                    if mean is not None:
                        logs[METRIC] = round(mean, 6)

        return _LogKL()
