"""Chat with a base model and its tuned versions side by side, from one copy of the base weights.

``ChatEngine`` holds ONE base model and any number of named adapters loaded from run folders.
LoRA-family adapters answer together with the base in one ``generate`` call (a mixed batch:
``adapter_names=["__base__", "tuned"]``); adapters that cannot share a batch answer one after the
other on the same weights, with the adapter switched off for the base. Only results that are
whole changed models (full fine-tuning) need a second copy, and ``note(name)`` says what it costs.

    engine = ChatEngine(ModelSpec())
    engine.add_adapter("tuned", "runs/lora-identity")
    for texts in engine.stream([{"role": "user", "content": "Who are you?"}], panes=[None, "tuned"]):
        print(texts[None], "|", texts["tuned"])
"""

from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import StoppingCriteriaList

from studio import checkpoints, models, run_log
from studio.status import RunStatus
from studio.chat_adapters import BASE, Call, SharedBase, read_run
from studio.chat_stream import GenSettings, RowStreamer, StopOnEvent
from studio.config import ConfigError, ModelSpec, RunConfig

__all__ = ["GenSettings", "ChatEngine", "answer_once", "read_run", "training_busy_message", "with_system", "BASE"]


def training_busy_message() -> str | None:
    """A readable line when a training run in this process is using the model, else None."""
    log = run_log.active()
    if log is not None and RunStatus(log.snapshot().get("state")).busy:  # from Start until the result is written
        return ("A training run is using the model right now; chat will answer again when it finishes "
                "or is stopped (this keeps the two from fighting over memory).")
    return None


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """``messages`` with a system message ``system`` in front, unless empty or the conversation has one."""
    msgs = list(messages)
    if system and not (msgs and msgs[0].get("role") == "system"):
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


class ChatEngine:
    """One base model, many named adapters, streaming answers pane by pane.

    The adapters and which model answers a pane live in ``studio.chat_adapters.SharedBase``; this class
    runs the generation: batching, streaming, stopping, end-of-sequence and padding.

    Args:
        model_spec: the base model to load (``studio.models.load``).
        model: an already loaded base model (e.g. the one a training run just trained on); skips loading.
        tokenizer: its tokenizer (needed with ``model``).
        system_prompt: a system message put before every conversation that has none.
    """

    def __init__(self, model_spec: ModelSpec | None = None, *, model=None, tokenizer=None,
                 system_prompt: str | None = None):
        self.spec = model_spec or ModelSpec()
        if model is None:
            model, tokenizer = models.load(self.spec)
        self.weights = SharedBase(self.spec, model.eval())
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self._lock = self.weights.lock  # disable_adapter/set_adapter switch the whole model: one generation at a time
        self._stop = threading.Event()
        self.last_tokens: dict = {}  # pane -> token ids of its latest answer (for tests and benchmarks)

    @property
    def _hf(self):
        return self.weights.model

    @property
    def _slots(self) -> dict:
        return self.weights.slots

    # ---- adapters (kept by self.weights) ---------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a generation holds the model now (a new one would wait for it)."""
        return self._lock.locked()

    def adapters(self) -> list[str]:
        """Names of the loaded adapters, in the order they were added."""
        return self.weights.names()

    def note(self, name: str) -> str:
        """What answering with ``name`` costs beyond the shared weights ('' when nothing)."""
        return self.weights.slots[name].note

    def can_batch(self, name: str) -> bool:
        """Whether ``name`` answers in one batch with the base (else it answers after it)."""
        return self.weights.slots[name].kind == "mixed"

    def add_adapter(self, name: str, run_dir: str | Path) -> str:
        """Load a run's trained result under ``name``; returns its note (what it costs, '' if nothing)."""
        return self.weights.add(name, run_dir)

    def holds(self, name: str, run_dir: str | Path) -> bool:
        """Whether ``name`` is loaded from ``run_dir`` as that run's result is now (not written again since)."""
        return self.weights.holds(name, run_dir)

    def remove_adapter(self, name: str) -> None:
        """Unload ``name`` (its memory is freed once nothing else refers to it)."""
        self.weights.remove(name)

    # ---- generation ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """End the generation under way (every pane) at the next token."""
        self._stop.set()

    def stream(self, messages: list[dict] | dict, panes: list | None = None,
               gen: GenSettings | None = None) -> Iterator[dict]:
        """Answer ``messages`` in every pane, yielding ``{pane: text_so_far}`` as tokens arrive.

        Args:
            messages: the conversation ([{"role", "content"}...]), or a dict of one conversation per pane
                (each pane keeps its own earlier answers).
            panes: ``None`` for the base model and adapter names, e.g. ``[None, "tuned"]``.
            gen: generation settings (default: GenSettings()).
        """
        panes = list(panes) if panes is not None else [BASE] + self.adapters()
        gen = gen or GenSettings()
        unknown = [p for p in panes if p is not BASE and p not in self._slots]
        if unknown:
            raise ConfigError(f"no adapter named {unknown[0]!r} is loaded (loaded: {', '.join(self._slots) or 'none'})")
        busy = training_busy_message()
        if busy:
            yield {p: busy for p in panes}
            return
        texts = {p: "" for p in panes}
        events: queue.Queue = queue.Queue()
        with self._lock:
            self._stop.clear()
            self.last_tokens = {}
            worker = threading.Thread(target=self._run_calls, args=(self._plan(panes), messages, gen, events),
                                      daemon=True, name="chat-generate")
            worker.start()
            try:
                yield from self._drain(events, texts)
            finally:
                self._stop.set()  # the consumer went away early: end the generation
                worker.join()

    def _drain(self, events: queue.Queue, texts: dict) -> Iterator[dict]:
        while True:
            item = events.get()
            changed = False
            while True:  # take everything queued so the UI gets one update per batch of tokens
                if item is None:
                    if changed:
                        yield dict(texts)
                    return
                if item[0] == "error":
                    raise item[1]
                texts[item[1]], changed = item[2], True
                try:
                    item = events.get_nowait()
                except queue.Empty:
                    break
            yield dict(texts)

    def _plan(self, panes: list) -> list[Call]:
        """The generate calls that answer ``panes`` (see SharedBase.plan)."""
        return self.weights.plan(panes)

    @contextmanager
    def using(self, pane) -> Iterator[Any]:
        """Hold the model set up as ``pane`` (None: the base) for plain forward passes, e.g. a loss.

        The engine's lock is held inside the block, so no generation switches adapters meanwhile.
        """
        if pane is not BASE and pane not in self._slots:
            raise ConfigError(f"no adapter named {pane!r} is loaded")
        call = self.weights.call_for(pane)
        with self._lock, call.context(), torch.no_grad():
            yield call.model

    def _run_calls(self, calls: list[Call], messages, gen: GenSettings, events: queue.Queue) -> None:
        try:
            for call in calls:
                if self._stop.is_set():
                    break
                self._generate(call, messages, gen, events)
        except Exception as err:  # handed to the consuming thread, which raises it
            events.put(("error", err))
        finally:
            events.put(None)

    def _generate(self, call: Call, messages, gen: GenSettings, events: queue.Queue) -> None:
        input_ids, attention = self._batch([self._conversation(messages, p) for p in call.panes])
        eos = self._eos_ids()
        streamer = RowStreamer(self.tokenizer, call.panes, set(eos), events)
        with call.context(), torch.no_grad():
            call.model.generate(input_ids=input_ids.to(self._hf.device), attention_mask=attention.to(self._hf.device),
                                streamer=streamer, stopping_criteria=StoppingCriteriaList([StopOnEvent(self._stop)]),
                                eos_token_id=eos, pad_token_id=self._pad_id(), **gen.generate_kwargs(), **call.extra)
        self.last_tokens.update(zip(call.panes, streamer.tokens))

    # ---- prompts ----------------------------------------------------------------------------------------

    def _conversation(self, messages, pane) -> list[dict]:
        return with_system(messages[pane] if isinstance(messages, dict) else messages, self.system_prompt)

    def encode(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation rendered with the chat template, ready for the assistant's answer."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:  # base models without a template: a plain transcript
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
        return tok(text, add_special_tokens=False)["input_ids"]

    def _batch(self, conversations: list[list[dict]]) -> tuple[torch.Tensor, torch.Tensor]:
        # Left padding: every row's next token then sits in the same (last) column.
        rows = [self.encode(c) for c in conversations]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        return ids, mask

    def _eos_ids(self) -> list[int]:
        found = getattr(self._hf.generation_config, "eos_token_id", None)
        ids = set(found if isinstance(found, list) else [found] if found is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(ids)

    def _pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else self._eos_ids()[0]


def answer_once(target: str, prompt: str, base: bool = False, max_new_tokens: int = 128) -> Iterator[str]:
    """Answer one prompt greedily (reproducible), yielding pieces of text as they come.

    Args:
        target: a run folder (its config's model plus its adapter), a model folder, a .gguf file or 'embedded'.
        prompt: the user's message.
        base: answer with the run's base model (adapter off) instead of the tuned one.
        max_new_tokens: longest answer, in tokens.
    """
    path = checkpoints.split(target)[0]  # RUN@N: the run's result at checkpoint N
    if (path / "config.yaml").is_file():
        cfg = RunConfig.load(path / "config.yaml")
        engine = ChatEngine(cfg.model, system_prompt=cfg.data.system_prompt)
        pane = BASE
        if not base:
            engine.add_adapter("tuned", target)
            pane = "tuned"
    else:
        engine, pane = ChatEngine(ModelSpec(id=target)), BASE
    sent = ""
    gen = GenSettings(max_new_tokens=max_new_tokens, greedy=True)
    for texts in engine.stream([{"role": "user", "content": prompt}], panes=[pane], gen=gen):
        text = texts[pane]
        yield text[len(sent):] if text.startswith(sent) else "\n" + text
        sent = text
