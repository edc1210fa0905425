"""The chat engine's adapter bookkeeping: one base model's weights and the named results loaded onto them.

``SharedBase`` keeps one slot per loaded result and knows how each one answers: LoRA-family adapters ride
in a batch with the base (PEFT's ``adapter_names``), other PEFT adapters are switched on one at a time,
prompt-learning results wrap the same weights, the studio's own adapters are hooked in with an off switch,
and whole changed models (full fine-tuning) take a second copy. ``plan`` turns the panes of one message
into ``generate`` calls; ``studio.chat.ChatEngine`` runs them.

    weights = SharedBase(ModelSpec(), model, tokenizer)
    weights.add("tuned", "runs/lora-identity")
    calls = weights.plan([BASE, "tuned"])   # one Call: both rows in one batch
"""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from peft import PeftConfig, PeftModel

from studio import checkpoints, methods, models
from studio.config import ConfigError, ModelSpec, RunConfig

__all__ = ["BASE", "MIXED_BASE", "read_run", "same_base", "result_stamp", "Slot", "Call", "SharedBase"]

BASE = None  # the pane key of the base model
MIXED_BASE = "__base__"  # PEFT's name for "no adapter" inside a mixed batch


def read_run(run_dir: str | Path) -> tuple[RunConfig, Any, Path]:
    """A run folder's config, its Method and its adapter folder; ConfigError when it is not usable.

    ``RUN@N`` gives the result saved with the run's checkpoint at step N (studio.checkpoints).
    """
    run_dir, step = checkpoints.split(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (it has no config.yaml)")
    cfg = RunConfig.load(run_dir / "config.yaml")
    folder = run_dir / "adapter" if step is None else checkpoints.result_folder(run_dir, step)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise ConfigError(f"{run_dir}: the run has no trained result yet (adapter/ is missing or empty)")
    models.refuse_pickle(folder)
    return cfg, methods.get(cfg.method.name), folder


def same_base(a: ModelSpec, b: ModelSpec) -> bool:
    """Whether a result trained on ``a`` can ride on ``b``'s weights (both name the same model)."""
    return models.resolve(a) == models.resolve(b)


def result_stamp(folder: Path) -> tuple:
    """What tells one writing of a result from the next: each file's name, size and modification time."""
    files = (f for f in Path(folder).iterdir() if f.is_file())
    return tuple(sorted((f.name, st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),)))


@dataclass
class Slot:
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
    stamp: tuple = ()  # the result's files as they were loaded (see result_stamp)


@dataclass
class Call:
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


class SharedBase:
    """One base model's weights, the named results loaded onto them, and how each pane is answered.

    Args:
        spec: the base model (a run of another base is refused; a 'copy' slot loads it again).
        model: the loaded base model.

    ``lock`` is held while adapters are added or removed and by the engine for a whole generation:
    switching adapters changes the whole model.
    """

    def __init__(self, spec: ModelSpec, model):
        self.spec = spec
        self.model = model  # the plain base (PEFT's layers are taken back out when the last adapter goes)
        self.lock = threading.Lock()
        self.slots: dict[str, Slot] = {}
        self._peft = None  # the one PeftModel holding every injected adapter
        self._inplace: Slot | None = None  # the one set of non-PEFT adapters hooked into the base weights
        self._added = 0

    def names(self) -> list[str]:
        """Names of the loaded adapters, in the order they were added."""
        return list(self.slots)

    def add(self, name: str, run_dir: str | Path) -> str:
        """Load a run's trained result under ``name``; returns its note (what it costs, '' if nothing)."""
        if not name or name == MIXED_BASE or name in self.slots:
            raise ConfigError(f"adapter name {name!r} is empty, reserved or already loaded")
        cfg, method, folder = read_run(run_dir)
        self._check_same_base(cfg, Path(run_dir))
        with self.lock:
            slot = self._load_slot(name, Path(run_dir), method, cfg.method, folder)
        if getattr(method, "quantized", None) and self.spec.quantization == "none":  # say so: it can shift answers
            slot.note = " ".join(filter(None, [slot.note, f"{name} was trained on a {method.quantized} base; here it "
                                               "runs on the full-precision base, so answers can differ slightly."]))
        slot.stamp = result_stamp(folder)
        self.slots[name] = slot
        return slot.note

    def holds(self, name: str, run_dir: str | Path) -> bool:
        """Whether ``name`` is loaded from ``run_dir`` as that run's result is now (not written again since)."""
        slot = self.slots.get(name)
        if slot is None or slot.run_dir.resolve() != Path(run_dir).resolve():
            return False
        try:
            return slot.stamp == result_stamp(read_run(run_dir)[2])
        except (ConfigError, OSError):
            return False

    def remove(self, name: str) -> None:
        """Unload ``name`` (its memory is freed once nothing else refers to it)."""
        if self.slots[name].kind == "inplace":
            raise ConfigError(f"{name}: adapters hooked into the shared weights stay until the chat is reopened")
        with self.lock:
            slot = self.slots.pop(name)
            if slot.kind in ("mixed", "switch"):
                self._peft.delete_adapter(slot.key)
                if not self._peft.peft_config:  # the last one: take PEFT's layers back out of the shared base
                    self.model, self._peft = self._peft.unload().eval(), None
                elif self._peft.active_adapter not in self._peft.peft_config:
                    self._peft.set_adapter(next(iter(self._peft.peft_config)))

    def _check_same_base(self, cfg: RunConfig, run_dir: Path) -> None:
        if not same_base(cfg.model, self.spec):
            raise ConfigError(f"{run_dir}: trained on model {cfg.model.id!r}, but this chat holds "
                              f"{self.spec.id!r}; open a chat on that model to compare")

    def _load_slot(self, name: str, run_dir: Path, method, spec, folder: Path) -> Slot:
        key, self._added = f"a{self._added}", self._added + 1
        if not (folder / "adapter_config.json").is_file():
            return self._load_own(name, run_dir, method, folder)
        config = PeftConfig.from_pretrained(str(folder))
        if config.is_prompt_learning:
            # Prompt methods add virtual tokens in front and leave the layers alone: they wrap the same weights.
            model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=key).eval()
            return Slot(name, run_dir, method, "prompt", model, key=key)
        if self._peft is not None and self._peft.peft_type != config.peft_type:
            why = f"PEFT cannot hold {config.peft_type} beside {self._peft.peft_type} adapters on one model"
            return self._load_copy(name, run_dir, method, folder, why)
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self.model, str(folder), adapter_name=key).eval()
        else:
            self._peft.load_adapter(str(folder), adapter_name=key)
            self._peft.eval()
        return Slot(name, run_dir, method, "mixed" if _mixes(method, spec, config) else "switch", key=key)

    def _load_own(self, name: str, run_dir: Path, method, folder: Path) -> Slot:
        """A non-PEFT result: hooked into the shared weights when the method can switch it off, else a copy."""
        switch = method.switch_off
        if switch is None or self._inplace is not None:
            why = "" if switch is None else "one set of these adapters fits on a model copy and another is loaded"
            return self._load_copy(name, run_dir, method, folder, why)
        methods.load_result(self.model, folder)  # adds the adapters to the shared base in place
        self._inplace = Slot(name, run_dir, method, "inplace", off=switch)
        return self._inplace

    def _load_copy(self, name: str, run_dir: Path, method, folder: Path, why: str = "") -> Slot:
        base, _ = models.load(self.spec)
        model = methods.load_result(base, folder)
        mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        why = why or (f"{method.title} changes the weights themselves, so the base and the tuned model "
                      "cannot share one copy")
        note = f"{name} runs on a second copy of the model (+{mb:,.0f} MB of memory): {why}."
        return Slot(name, run_dir, method, "copy", model.eval(), note)

    # ---- which model and setting answers a pane ---------------------------------------------------------

    def plan(self, panes: list) -> list[Call]:
        """Split the panes into generate calls: the base and mixable adapters in one batch, the rest alone."""
        mixed = [p for p in panes if p is not BASE and self.slots[p].kind == "mixed"]
        calls = []
        rows = ([BASE] if BASE in panes else []) + mixed
        if len(rows) == 1 and mixed:  # one row needs no per-row routing, which costs time in every layer
            return [self.call_for(mixed[0])] + self.plan([p for p in panes if p != mixed[0]])
        if mixed:
            names = [MIXED_BASE if r is BASE else self.slots[r].key for r in rows]
            calls.append(Call(rows, self._peft, lambda: self._setting(peft=True), {"adapter_names": names}))
        elif BASE in panes:
            calls.append(Call([BASE], self.model, self._setting))
        for p in panes:
            if p is not BASE and self.slots[p].kind != "mixed":
                calls.append(self.call_for(p))
        return calls

    def call_for(self, pane) -> Call:
        """The call that answers ``pane`` (None: the base) on its own."""
        if pane is BASE:
            return Call([BASE], self.model, self._setting)
        slot = self.slots[pane]
        if slot.kind in ("switch", "mixed"):
            return Call([slot.name], self._peft, lambda: self._setting(peft=slot.key))
        if slot.kind == "prompt":  # virtual tokens in front of the base: everything else off
            return Call([slot.name], slot.model, self._setting)
        if slot.kind == "inplace":
            return Call([slot.name], self.model, lambda: self._setting(inplace=True))
        return Call([slot.name], slot.model)

    @contextmanager
    def _setting(self, peft: bool | str = False, inplace: bool = False) -> Iterator[None]:
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
                stack.enter_context(self._inplace.off(self.model))
            yield
