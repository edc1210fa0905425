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
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from studio.chat_stream import GenSettings, RowStreamer, StopOnEvent
from studio.config import ConfigError, ModelSpec, RunConfig

__all__ = ["GenSettings", "ChatEngine", "answer_once", "read_run", "training_busy_message", "BASE"]

BASE = None  # the pane key of the base model
_MIXED_BASE = "__base__"  # PEFT's name for "no adapter" inside a mixed batch


def read_run(run_dir: str | Path) -> tuple[RunConfig, Any, Path]:
    """A run folder's config, its Method and its adapter folder; ConfigError when it is not usable."""
    from studio import methods, models

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (it has no config.yaml)")
    cfg = RunConfig.load(run_dir / "config.yaml")
    folder = run_dir / "adapter"
    if not folder.is_dir() or not any(folder.iterdir()):
        raise ConfigError(f"{run_dir}: the run has no trained result yet (adapter/ is missing or empty)")
    models.refuse_pickle(folder)
    return cfg, methods.get(cfg.method.name), folder


def training_busy_message() -> str | None:
    """A readable line when a training run in this process is using the model, else None."""
    try:
        from studio import training
    except ImportError:
        return None
    current = getattr(training, "current_job", None)
    job = current() if current else None
    if job is None:
        return None
    try:
        state = job.snapshot().get("state")
    except Exception:  # a job half set up must not break chat
        return None
    if state in ("queued", "loading", "training", "saving"):  # from Start until the result is written
        return ("A training run is using the model right now; chat will answer again when it finishes "
                "or is stopped (this keeps the two from fighting over memory).")
    return None


@dataclass
class _Slot:
    """One named adapter. kind: 'mixed' (rides in a batch with the base), 'switch' (same PEFT model,
    selected with set_adapter), 'prompt' (a prompt-learning wrapper on the same weights), 'inplace'
    (the studio's own adapters hooked into the same weights, with an off switch) or 'copy' (a separate model)."""

    name: str
    run_dir: Path
    method: Any
    kind: str
    model: Any = None
    note: str = ""
    off: Callable[[Any], Any] | None = None  # inplace kind: the method's context manager that switches it off
    key: str = ""  # the name inside PEFT (user names like 'prefix' would clash with PEFT's parameter prefixes)
    stamp: tuple = ()  # the result's files as they were loaded (see _stamp)


def _stamp(folder: Path) -> tuple:
    """What tells one writing of a result from the next: each file's name, size and modification time."""
    files = (f for f in Path(folder).iterdir() if f.is_file())
    return tuple(sorted((f.name, st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),)))


@dataclass
class _Call:
    """One ``generate`` call: which panes it answers, on which model, inside which adapter setting."""

    panes: list
    model: Any
    context: Callable[[], Any] = nullcontext
    extra: dict = field(default_factory=dict)


def _mixes(method, spec, peft_config) -> bool:
    """Whether rows of this adapter may share one batch with base rows (PEFT's ``adapter_names``)."""
    ask = getattr(method, "mixed_batch", None)
    ok = ask(spec) if callable(ask) else method.family == "lora"
    return bool(ok) and not getattr(peft_config, "use_dora", False)  # PEFT refuses DoRA in mixed batches


class ChatEngine:
    """One base model, many named adapters, streaming answers pane by pane.

    Args:
        model_spec: the base model to load (``studio.models.load``).
        model: an already loaded base model (e.g. the one a training run just trained on); skips loading.
        tokenizer: its tokenizer (needed with ``model``).
        system_prompt: a system message put before every conversation that has none.
    """

    def __init__(self, model_spec: ModelSpec | None = None, *, model=None, tokenizer=None,
                 system_prompt: str | None = None):
        from studio import models

        self.spec = model_spec or ModelSpec()
        if model is None:
            model, tokenizer = models.load(self.spec)
        self._hf = model.eval()
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self._peft = None  # the one PeftModel holding every injected adapter
        self._inplace: _Slot | None = None  # the one set of non-PEFT adapters hooked into the base weights
        self._added = 0
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()  # disable_adapter/set_adapter switch the whole model: one generation at a time
        self._stop = threading.Event()
        self.last_tokens: dict = {}  # pane -> token ids of its latest answer (for tests and benchmarks)

    # ---- adapters -------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a generation holds the model now (a new one would wait for it)."""
        return self._lock.locked()

    def adapters(self) -> list[str]:
        """Names of the loaded adapters, in the order they were added."""
        return list(self._slots)

    def note(self, name: str) -> str:
        """What answering with ``name`` costs beyond the shared weights ('' when nothing)."""
        return self._slots[name].note

    def can_batch(self, name: str) -> bool:
        """Whether ``name`` answers in one batch with the base (else it answers after it)."""
        return self._slots[name].kind == "mixed"

    def add_adapter(self, name: str, run_dir: str | Path) -> str:
        """Load a run's trained result under ``name``; returns its note (what it costs, '' if nothing)."""
        if not name or name == _MIXED_BASE or name in self._slots:
            raise ConfigError(f"adapter name {name!r} is empty, reserved or already loaded")
        cfg, method, folder = read_run(run_dir)
        self._check_same_base(cfg, Path(run_dir))
        with self._lock:
            slot = self._load_slot(name, Path(run_dir), method, cfg.method, folder)
        if getattr(method, "quantized", None) and self.spec.quantization == "none":  # say so: it can shift answers
            slot.note = " ".join(filter(None, [slot.note, f"{name} was trained on a {method.quantized} base; here it "
                                               "runs on the full-precision base, so answers can differ slightly."]))
        slot.stamp = _stamp(folder)
        self._slots[name] = slot
        return slot.note

    def holds(self, name: str, run_dir: str | Path) -> bool:
        """Whether ``name`` is loaded from ``run_dir`` as that run's result is now (not written again since)."""
        slot = self._slots.get(name)
        if slot is None or slot.run_dir.resolve() != Path(run_dir).resolve():
            return False
        try:
            return slot.stamp == _stamp(read_run(run_dir)[2])
        except (ConfigError, OSError):
            return False

    def remove_adapter(self, name: str) -> None:
        """Unload ``name`` (its memory is freed once nothing else refers to it)."""
        if self._slots[name].kind == "inplace":
            raise ConfigError(f"{name}: adapters hooked into the shared weights stay until the chat is reopened")
        with self._lock:
            slot = self._slots.pop(name)
            if slot.kind in ("mixed", "switch"):
                self._peft.delete_adapter(slot.key)
                if not self._peft.peft_config:  # the last one: take PEFT's layers back out of the shared base
                    self._hf, self._peft = self._peft.unload().eval(), None
                elif self._peft.active_adapter not in self._peft.peft_config:
                    self._peft.set_adapter(next(iter(self._peft.peft_config)))

    def _check_same_base(self, cfg: RunConfig, run_dir: Path) -> None:
        from studio import models

        if models.resolve(cfg.model) != models.resolve(self.spec):
            raise ConfigError(f"{run_dir}: trained on model {cfg.model.id!r}, but this chat holds "
                              f"{self.spec.id!r}; open a chat on that model to compare")

    def _load_slot(self, name: str, run_dir: Path, method, spec, folder: Path) -> _Slot:
        key, self._added = f"a{self._added}", self._added + 1
        if not (folder / "adapter_config.json").is_file():
            return self._load_own(name, run_dir, method, folder)
        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(str(folder))
        if config.is_prompt_learning:
            # Prompt methods add virtual tokens in front and leave the layers alone: they wrap the same weights.
            model = PeftModel.from_pretrained(self._hf, str(folder), adapter_name=key).eval()
            return _Slot(name, run_dir, method, "prompt", model, key=key)
        if self._peft is not None and self._peft.peft_type != config.peft_type:
            why = f"PEFT cannot hold {config.peft_type} beside {self._peft.peft_type} adapters on one model"
            return self._load_copy(name, run_dir, method, folder, why)
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._hf, str(folder), adapter_name=key).eval()
        else:
            self._peft.load_adapter(str(folder), adapter_name=key)
            self._peft.eval()
        return _Slot(name, run_dir, method, "mixed" if _mixes(method, spec, config) else "switch", key=key)

    def _load_own(self, name: str, run_dir: Path, method, folder: Path) -> _Slot:
        """A non-PEFT result: hooked into the shared weights when the method can switch it off, else a copy."""
        from studio import methods

        switch = getattr(method, "extra", {}).get("adapter_off")
        if switch is None or self._inplace is not None or not hasattr(methods, "load_result"):
            why = "" if switch is None else "one set of these adapters fits on a model copy and another is loaded"
            return self._load_copy(name, run_dir, method, folder, why)
        methods.load_result(self._hf, folder)  # adds the adapters to the shared base in place
        self._inplace = _Slot(name, run_dir, method, "inplace", off=switch)
        return self._inplace

    def _load_copy(self, name: str, run_dir: Path, method, folder: Path, why: str = "") -> _Slot:
        from studio import methods, models

        base, _ = models.load(self.spec)
        loader = getattr(methods, "load_result", None)
        if loader is not None:
            model = loader(base, folder)
        elif (folder / "config.json").is_file():
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=base.dtype, use_safetensors=True)
        else:
            raise ConfigError(f"{run_dir}: cannot load a {method.name} result here")
        mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        why = why or (f"{method.title} changes the weights themselves, so the base and the tuned model "
                      "cannot share one copy")
        note = f"{name} runs on a second copy of the model (+{mb:,.0f} MB of memory): {why}."
        return _Slot(name, run_dir, method, "copy", model.eval(), note)

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

    def _plan(self, panes: list) -> list[_Call]:
        """Split the panes into generate calls: the base and mixable adapters in one batch, the rest alone."""
        mixed = [p for p in panes if p is not BASE and self._slots[p].kind == "mixed"]
        calls = []
        rows = ([BASE] if BASE in panes else []) + mixed
        if len(rows) == 1 and mixed:  # one row needs no per-row routing, which costs time in every layer
            return [self._single_call(self._slots[mixed[0]])] + self._plan([p for p in panes if p != mixed[0]])
        if mixed:
            names = [_MIXED_BASE if r is BASE else self._slots[r].key for r in rows]
            calls.append(_Call(rows, self._peft, lambda: self._setting(peft=True), {"adapter_names": names}))
        elif BASE in panes:
            calls.append(_Call([BASE], self._hf, self._setting))
        for p in panes:
            if p is not BASE and self._slots[p].kind != "mixed":
                calls.append(self._single_call(self._slots[p]))
        return calls

    @contextmanager
    def using(self, pane) -> Iterator[Any]:
        """Hold the model set up as ``pane`` (None: the base) for plain forward passes, e.g. a loss.

        The engine's lock is held inside the block, so no generation switches adapters meanwhile.
        """
        if pane is not BASE and pane not in self._slots:
            raise ConfigError(f"no adapter named {pane!r} is loaded")
        call = _Call([BASE], self._hf, self._setting) if pane is BASE else self._single_call(self._slots[pane])
        with self._lock, call.context(), torch.no_grad():
            yield call.model

    def _single_call(self, slot: _Slot) -> _Call:
        if slot.kind in ("switch", "mixed"):
            return _Call([slot.name], self._peft, lambda: self._setting(peft=slot.key))
        if slot.kind == "prompt":  # virtual tokens in front of the base: everything else off
            return _Call([slot.name], slot.model, self._setting)
        if slot.kind == "inplace":
            return _Call([slot.name], self._hf, lambda: self._setting(inplace=True))
        return _Call([slot.name], slot.model)

    @contextmanager
    def _setting(self, peft: bool | str = False, inplace: bool = False):
        """Switch the shared weights for one call.

        Args:
            peft: False: injected PEFT adapters off (the base); True: on, a mixed batch picks one per row;
                a name: only that adapter.
            inplace: keep the studio's own hooked-in adapters on (else they are off).
        """
        with ExitStack() as stack:
            if self._peft is not None:
                if peft is False:
                    stack.enter_context(self._peft.disable_adapter())
                else:
                    self._peft.base_model.enable_adapter_layers()
                    if isinstance(peft, str):
                        self._peft.set_adapter(peft)
            if self._inplace is not None and not inplace:
                stack.enter_context(self._inplace.off(self._hf))
            yield

    def _run_calls(self, calls: list[_Call], messages, gen: GenSettings, events: queue.Queue) -> None:
        try:
            for call in calls:
                if self._stop.is_set():
                    break
                self._generate(call, messages, gen, events)
        except Exception as err:  # handed to the consuming thread, which raises it
            events.put(("error", err))
        finally:
            events.put(None)

    def _generate(self, call: _Call, messages, gen: GenSettings, events: queue.Queue) -> None:
        from transformers import StoppingCriteriaList

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
        msgs = list(messages[pane] if isinstance(messages, dict) else messages)
        if self.system_prompt and not (msgs and msgs[0].get("role") == "system"):
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return msgs

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
    path = Path(target)
    if (path / "config.yaml").is_file():
        cfg = RunConfig.load(path / "config.yaml")
        engine = ChatEngine(cfg.model, system_prompt=cfg.data.system_prompt)
        pane = BASE
        if not base:
            engine.add_adapter("tuned", path)
            pane = "tuned"
    else:
        engine, pane = ChatEngine(ModelSpec(id=target)), BASE
    sent = ""
    gen = GenSettings(max_new_tokens=max_new_tokens, greedy=True)
    for texts in engine.stream([{"role": "user", "content": prompt}], panes=[pane], gen=gen):
        text = texts[pane]
        yield text[len(sent):] if text.startswith(sent) else "\n" + text
        sent = text
