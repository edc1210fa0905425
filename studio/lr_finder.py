"""Learning-rate finder: a short range test on a copy of the settings (Smith, "Cyclical Learning Rates", 2017).

The learning rate rises exponentially from ``start`` to ``end`` over a few dozen optimizer steps, one batch each;
the loss (smoothed) is recorded against it. The suggestion is the learning rate where the smoothed loss falls
fastest against log(lr) (the steepest descent), taken from before the loss minimum and no higher than a tenth
of the learning rate at that minimum: the usual margin, since the minimum itself is already where training
starts to become unstable. The trained weights are put back afterwards and nothing is saved as a run::

    found = find_lr(cfg)                     # loads the model and data the run would use
    found.suggestion, found.lrs, found.losses
    python -m studio lr-find presets/lora-identity.yaml --steps 40
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from studio import data, methods, models
from studio.config import ConfigError, RunConfig

__all__ = ["LrFinding", "find_lr", "range_test", "suggest", "schedule"]

SMOOTHING = 0.7
"""weight of the previous smoothed loss: with a few dozen steps, more smoothing lags behind the curve"""

DIVERGED = 4.0
"""the test ends once the smoothed loss is this many times its lowest"""


@dataclass
class LrFinding:
    """What a range test found."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float | None = None
    """the learning rate to use, inside the swept range; None when the loss never fell"""
    min_loss_lr: float | None = None
    start: float = 0.0
    end: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line: the suggestion and where the loss was lowest."""
        if self.suggestion is None:
            return (f"the loss did not fall between {self.start:.1e} and {self.end:.1e}: "
                    "try a wider range (--start, --end) or more steps")
        return (f"suggested train.learning_rate: {self.suggestion:.2e} (steepest descent; the loss was lowest at "
                f"{self.min_loss_lr:.2e}, swept {self.start:.1e} to {self.end:.1e} in {len(self.lrs)} steps)")


def schedule(start: float, end: float, steps: int) -> list[float]:
    """``steps`` learning rates rising exponentially from ``start`` to ``end``."""
    if steps < 2 or not 0 < start < end:
        raise ConfigError(f"the lr range test needs 0 < start < end and 2 steps or more "
                          f"(got start={start}, end={end}, steps={steps})")
    ratio = (end / start) ** (1 / (steps - 1))
    return [start * ratio**i for i in range(steps)]


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float | None, float | None]:
    """(suggestion, lr at the lowest smoothed loss) from a range test's curve; (None, ...) if it never fell."""
    if len(smoothed) < 3:
        return None, None
    low = min(range(len(smoothed)), key=smoothed.__getitem__)
    if low == 0:
        return None, lrs[0]
    logs = [math.log(x) for x in lrs[:low + 1]]
    # the slope at i from its neighbours (one-sided at the ends), d loss / d log(lr)
    slopes = [(smoothed[min(i + 1, low)] - smoothed[max(i - 1, 0)]) / (logs[min(i + 1, low)] - logs[max(i - 1, 0)])
              for i in range(low + 1)]
    steepest = min(range(low + 1), key=slopes.__getitem__)
    pick = min(lrs[steepest], lrs[low] / 10)
    return max(pick, lrs[0]), lrs[low]


def range_test(model, batches, lrs: list[float], *, weight_decay: float = 0.0, max_grad_norm: float = 1.0,
               optimizer: str = "adamw", step_hook=None) -> LrFinding:
    """Take one optimizer step per learning rate in ``lrs`` on ``model``, then put its weights back exactly.

    Args:
        model: a model whose trainable parameters are the ones the run would train.
        batches: an iterator of collated batches (dicts of tensors); one is used per step.
        step_hook: the method's per-step hook, ``(model, step)``, as training would call it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the method leaves nothing to train, so there is no learning rate to find")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    make = torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW
    opt = make(params, lr=lrs[0], weight_decay=weight_decay)
    found = LrFinding(start=lrs[0], end=lrs[-1])
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    try:
        for step, lr in enumerate(lrs, start=1):
            for group in opt.param_groups:
                group["lr"] = lr
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(batches).items()}
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                break
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            if step_hook is not None:
                step_hook(model, step)
            opt.zero_grad(set_to_none=True)
            value = float(loss.detach())
            prev = found.smoothed[-1] if found.smoothed else value
            found.lrs.append(lr)
            found.losses.append(value)
            found.smoothed.append(SMOOTHING * prev + (1 - SMOOTHING) * value)
            if found.smoothed[-1] > DIVERGED * min(found.smoothed):
                break
    finally:
        # the weights the test moved go back bit for bit; optimizer state dies with ``opt``
        with torch.no_grad():
            model.load_state_dict(saved)
        model.train(was_training)
    found.suggestion, found.min_loss_lr = suggest(found.lrs, found.smoothed)
    return found


def _batches(rows, collate, size: int, seed: int):
    """Batches of ``size`` rows in a shuffled order, round and round."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(rows), generator=gen).tolist()
        for i in range(0, len(order) - size + 1 if len(order) >= size else 1, size):
            yield collate([rows[j] for j in order[i:i + size]])


def find_lr(cfg: RunConfig, *, steps: int = 40, start: float = 1e-6, end: float = 1e-1) -> LrFinding:
    """Run the range test for ``cfg`` (its model, method, data and batch size); nothing is written to disk."""
    cfg = RunConfig.from_dict(cfg.to_dict())  # a copy: the person's settings are not touched
    cfg.data.packing = False  # padded batches need no check of the adapted model
    method = methods.get(cfg.method.name)
    spec = methods.model_spec_for(cfg.model, cfg.method)
    tokenizer = models.load_tokenizer(spec)
    prepared = data.build(cfg, tokenizer)
    if not prepared.train:
        raise ConfigError("the data has no training rows")
    model, tokenizer = models.load(spec)
    torch.manual_seed(cfg.train.seed)
    ctx = methods.Context(tokenizer=tokenizer, total_steps=steps, model_spec=spec,
                          gradient_checkpointing=cfg.train.gradient_checkpointing)
    model = method.apply(model, cfg.method, ctx)
    collate = data.Collator(tokenizer.pad_token_id)
    batches = _batches(prepared.train, collate, cfg.train.micro_batch_size, cfg.train.seed)
    t = cfg.train
    return range_test(model, batches, schedule(start, end, steps), weight_decay=t.weight_decay,
                      max_grad_norm=t.max_grad_norm, optimizer="sgd" if t.optimizer == "sgd" else "adamw",
                      step_hook=method.step_hook)
