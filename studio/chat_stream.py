"""Generation pieces of the chat engine: settings, a stop flag as a StoppingCriteria, and a streamer
that routes each batch row's tokens to its own pane."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import torch

from studio.config import ConfigError

__all__ = ["GenSettings", "StopOnEvent", "RowStreamer"]


@dataclass
class GenSettings:
    """How answers are generated."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
    greedy: bool = False  # true: always the most likely token, reproducible

    def __post_init__(self):
        problems = []
        if not 1 <= self.max_new_tokens <= 8192:
            problems.append(f"max_new_tokens: {self.max_new_tokens} is outside 1..8192")
        if not self.greedy and not 0.0 < self.temperature <= 5.0:
            problems.append(f"temperature: {self.temperature} is outside (0, 5]; tick greedy for temperature 0")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p: {self.top_p} is outside (0, 1]")
        if self.top_k < 0:
            problems.append(f"top_k: {self.top_k} is below 0")
        if not 0.5 <= self.repetition_penalty <= 3.0:
            problems.append(f"repetition_penalty: {self.repetition_penalty} is outside 0.5..3")
        if problems:
            raise ConfigError(problems)

    def generate_kwargs(self) -> dict:
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.greedy:
            return {**kw, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {**kw, "do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


class StopOnEvent:
    """StoppingCriteria that ends every row as soon as ``event`` is set (read once per token)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class RowStreamer:
    """Routes each batch row's new tokens to its own pane and stops a row at its end of sequence."""

    def __init__(self, tokenizer, panes: list, eos_ids: set[int], out: queue.Queue):
        self.tok, self.panes, self.eos, self.out = tokenizer, panes, eos_ids, out
        self.tokens: list[list[int]] = [[] for _ in panes]
        self.done = [False] * len(panes)
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate pushes the prompt first
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.panes), -1)[:, -1].tolist()):
            if self.done[row]:
                continue  # finished rows receive padding from here on
            if token in self.eos:
                self.done[row] = True
                continue
            self.tokens[row].append(token)
            text = self.tok.decode(self.tokens[row], skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                self.out.put(("text", self.panes[row], text))

    def end(self) -> None:
        pass
