"""GRPO training: TRL's GRPOTrainer around the studio's model, prompt rows, rewards and callbacks.

TrainingJob asks the objective entry whether it writes its own answers (``Objective.online``) and, if so,
builds its data and trainer here; progress, stop, resume, the method's step hook and the final save stay
the job's. The policy-gradient loss, the sampling and the group baseline are TRL's own; the rewards are the
studio's built-ins (``studio.rewards``), configured by ``train.rewards``.

With ``beta`` above 0 the KL reference is the starting model: TRL switches a fresh PEFT adapter off (or keeps
a frozen 'ref' copy of a started one, dropped before saving); methods that change the base weights are
refused there, since TRL would reload the base from the hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import TrainerCallback

from studio import rewards
from studio.config import RunConfig
from studio.data import chat_template
from studio.data.preference import Pairs
from studio.data.prompts import build
from studio.objective_api import Objective
from studio.train_parts import build_args

__all__ = ["build_data", "build_trainer", "Samples", "SAMPLES_FILE", "model_scorer"]

SAMPLES_FILE = "samples.jsonl"
"""In the run folder: one line per logged step with the latest sampled answers and their scores."""


def build_data(cfg: RunConfig, tokenizer, objective: Objective) -> Pairs:
    """The run's prompt rows, with the columns the rewards read checked."""
    return build(cfg, tokenizer, needs=rewards.columns_read(cfg.train.rewards))


def model_scorer(device: str | None = None):
    """``(folder, prompts, completions) -> scores``: a local sequence-classification model's first logit for
    prompt and answer rendered with its own tokenizer's chat template (loaded once per folder, safetensors)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    loaded: dict = {}

    def score(folder, prompts, completions):
        if folder not in loaded:
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True,
                                                                       use_safetensors=True).eval()
            loaded[folder] = (tok, model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")))
        tok, model = loaded[folder]
        texts = [_render(tok, p, c) for p, c in zip(prompts, completions)]
        batch = tok(texts, return_tensors="pt", padding=True, truncation=True).to(model.device)
        with torch.inference_mode():
            return model(**batch).logits[:, 0].float().tolist()

    return score


def _render(tok, prompt, completion) -> str:
    if isinstance(prompt, list) and getattr(tok, "chat_template", None):
        answer = completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}]
        return tok.apply_chat_template(prompt + answer, tokenize=False)
    return rewards.text_of(prompt) + rewards.text_of(completion)


class Samples(TrainerCallback):
    """At every log: the latest sampled answers with their scores, as a 'samples' event and a line in the
    run folder's samples.jsonl (what the Train tab's table shows, also for a run started from the CLI)."""

    def __init__(self, log, board: rewards.SampleBoard):
        self.log, self.board = log, board

    def on_log(self, args, state, control, logs=None, **kw):
        rows = self.board.rows()
        if not rows or "loss" not in (logs or {}):
            return
        self.log.event("samples", step=state.global_step, rows=rows)
        if state.is_world_process_zero and self.log.run_dir is not None:
            with open(Path(self.log.run_dir) / SAMPLES_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, "rows": rows}) + "\n")


_STUDIO_GRPO: dict[type, type] = {}


def _counting(trainer_cls: type) -> type:
    """``trainer_cls`` counting real tokens (prompt and answer) for the chart's tokens/s."""
    if trainer_cls not in _STUDIO_GRPO:
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # training_step still holds the raw prompt rows; the answers exist (and are masked) from here on
            if model.training:
                self.studio_tokens += sum(int(inputs[k].sum()) for k in ("prompt_mask", "completion_mask")
                                          if k in inputs)
            return trainer_cls.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

        _STUDIO_GRPO[trainer_cls] = type(f"Studio{trainer_cls.__name__}", (trainer_cls,),
                                         {"studio_tokens": 0, "compute_loss": compute_loss})
    return _STUDIO_GRPO[trainer_cls]


def build_trainer(cfg: RunConfig, objective: Objective, model, tokenizer, prompts: Pairs, *, output_dir: Path,
                  lr: float, total_steps: int, callbacks: list, reference=None, log=None):
    """TRL's GRPOTrainer over ``model`` (already made trainable by the method), scoring with ``train.rewards``.

    Args:
        reference: unused (TRL keeps GRPO's reference itself); accepted so both TRL paths build alike.
        log: the job's RunLog; with it, a Samples callback publishes the latest answers and scores.
    """
    from datasets import Dataset

    trainer_cls, config_cls = objective.trainer()
    items = cfg.train.rewards
    args = build_args(cfg, output_dir, lr=lr, total_steps=total_steps, has_eval=bool(prompts.eval),
                      args_class=config_cls, gradient_checkpointing=cfg.train.gradient_checkpointing,
                      reward_weights=rewards.weights(items), log_completions=False,
                      **objective.trainer_args(objective.values(cfg.train.objective)))
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template(tokenizer)  # the studio's fallback, as SFT renders rows
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    board = rewards.SampleBoard(rewards.names(items), rewards.weights(items))
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    funcs = rewards.scorers(items, count, model_scorer(), board)
    extra = [Samples(log, board)] if log is not None else []
    return _counting(trainer_cls)(
        model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(prompts.train),
        eval_dataset=Dataset.from_list(prompts.eval) if prompts.eval else None, processing_class=tokenizer,
        callbacks=[*callbacks, *extra])
