"""The chat session's rules: which engine serves which runs, and what each pane is sent.

One process keeps ONE chat engine (one copy of a base model's weights) in a holder, e.g. the browser app's
state. ``open_panes`` reuses it for runs of the same base, unloads results that were written again since
they were loaded (a run deleted and trained again under its name), leaves out runs of another base with a
note, and replaces the engine when the base changes. ``system_text`` is the system-prompt fallback (the one
typed, else the run's training prompt, as ``studio chat`` does); ``answer_in_panes`` streams one message
to every pane; ``evaluate_prompts`` scores a prompt set on the same engine.

    engine, names, notes = open_panes(holder, "embedded", ["runs/a", "runs/b"])
    for histories in answer_in_panes(engine, names, [[], [], []], "hi", system_text("", "runs/a"), GenSettings()):
        ...
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Protocol

from studio import checkpoints, evaluate, models, runs
from studio.chat import ChatEngine, with_system
from studio.chat_adapters import BASE, read_run, same_base
from studio.chat_stream import GenSettings
from studio.config import ConfigError, ModelSpec

__all__ = ["EngineHolder", "chat_runs", "engine_key", "open_panes", "system_text", "answer_in_panes",
           "evaluate_prompts"]


class EngineHolder(Protocol):
    """Where a process keeps its one chat engine (the browser app's state is one)."""

    chat: Any
    """the ChatEngine, or None before the first chat"""
    chat_key: tuple | None
    """which base model the engine holds (``engine_key``)"""
    lock: threading.Lock
    """held while the engine is replaced or adapters are added (two sessions must not add the same one)"""


def chat_runs(root: str | Path) -> list[tuple[str, str]]:
    """(name, folder) of the runs under ``root`` that have a trained result to chat with, newest first.

    Each run is followed by its checkpoints that hold a result: ("run @ step N · loss ...", "RUN@N").
    """
    out = []
    for r in runs.list_runs(root):
        if r.adapter_bytes and r.status in ("done", "stopped"):
            out.append((r.name, str(r.path)))
        out += checkpoints.targets([r.path])
    return out


def engine_key(spec: ModelSpec) -> tuple:
    """What tells one base model from another: an engine serves runs whose base has the same key."""
    return models.resolve(spec), spec.quantization, spec.dtype


def open_panes(holder: EngineHolder, model_id: str, run_dirs: list[str | None]
               ) -> tuple[ChatEngine, list[str | None], list[str]]:
    """The holder's chat engine with every run's adapter loaded on its one copy of the base weights.

    Args:
        holder: keeps the engine between calls.
        model_id: the base model when no run is given ('' : the embedded model).
        run_dirs: run folders, one per pane (None: an empty pane); the first one given picks the base model.

    Returns:
        (engine, adapter name per run or None where it cannot answer, note lines). A run of another base
        model is left out with a note: loading its base too would take a second copy of the weights.
    """
    first = next((r for r in run_dirs if r), None)
    spec = read_run(first)[0].model if first else ModelSpec(id=model_id or "embedded")
    key = engine_key(spec)
    with holder.lock:  # two sessions must not add the same adapter at once
        # a stale result that cannot be unloaded (one hooked into the shared weights): load the base afresh
        stale = holder.chat is not None and holder.chat_key == key and not _drop_stale(holder.chat, run_dirs)
        if holder.chat is None or holder.chat_key != key or stale:
            holder.chat, holder.chat_key = None, None  # let the old weights go before loading new ones
            holder.chat, holder.chat_key = ChatEngine(spec), key
        engine, names, notes = holder.chat, [], []
        for run_dir in run_dirs:
            name, note = _add_run(engine, run_dir, spec, names)
            names.append(name)
            notes += [note] if note else []
    return engine, names, notes


def _drop_stale(engine: ChatEngine, run_dirs: list[str | None]) -> bool:
    """Unload the adapters named like these runs but loaded from another folder or from an earlier writing of
    the same one (a run deleted and trained again under its name); False where one cannot be unloaded."""
    for run_dir in filter(None, run_dirs):
        name = Path(run_dir).name
        if name in engine.adapters() and not engine.holds(name, run_dir):
            try:
                engine.remove_adapter(name)
            except ConfigError:
                return False
    return True


def _add_run(engine: ChatEngine, run_dir: str | None, spec: ModelSpec, taken: list) -> tuple[str | None, str]:
    """(adapter name or None, note) of one pane's run, loaded into ``engine`` unless it cannot share it."""
    if not run_dir:
        return None, ""
    name = Path(run_dir).name
    if name in taken:
        return None, f"{name} already answers in another pane."
    cfg = read_run(run_dir)[0]
    if not same_base(cfg.model, spec):
        return None, (f"{name} is left out: it was trained on {cfg.model.id}, not {spec.id}, so it cannot share "
                      "this chat's one copy of the base weights (pick it as the tuned run to chat with it).")
    if name not in engine.adapters():
        engine.add_adapter(name, run_dir)
    return name, engine.note(name)


def system_text(system_prompt: str | None, run_dir: str | None) -> str:
    """The system prompt to use: the one typed, else the one the run was trained with (as the CLI chats)."""
    text = (system_prompt or "").strip()
    if not text and run_dir:
        text = (read_run(run_dir)[0].data.system_prompt or "").strip()
    return text


def answer_in_panes(engine: ChatEngine, names: list[str | None], histories: list[list[dict]], message: str,
                    system: str, gen: GenSettings) -> Iterator[list[list[dict]]]:
    """Send ``message`` to the base (history 0) and each named run (history i: ``names[i - 1]``) at once.

    Yields every history as tokens arrive: the message and the answer so far appended where a model answers,
    the others untouched. ``system`` goes before each conversation that has no system message (not shown).
    """
    user = {"role": "user", "content": message}
    active = {0: BASE, **{i: n for i, n in enumerate(names, 1) if n}}  # history slot -> engine pane
    outs = [h + [user] if i in active else h for i, h in enumerate(histories)]
    conversations = {pane: with_system(outs[i], system) for i, pane in active.items()}
    for texts in engine.stream(conversations, panes=list(conversations), gen=gen):
        yield [o + [{"role": "assistant", "content": texts.get(active[i], "")}] if i in active else o
               for i, o in enumerate(outs)]


def evaluate_prompts(engine: ChatEngine, pane: str | None, run_dir: str, prompts: str | None, use_heldout: bool,
                     system_prompt: str | None, max_new_tokens: int) -> evaluate.EvalReport:
    """Answer typed prompts (and the run's held-out split if asked) with the base and ``pane`` of ``engine``.

    Args:
        prompts: one per line, ``prompt => reference`` (``evaluate.parse_prompts``).
        use_heldout: add the run's held-out rows (its val_fraction split and val_path) as prompts.
        system_prompt: put before every prompt; empty: the one the run was trained with.
        max_new_tokens: longest answer (answers are greedy).

    Returns:
        the report, also saved as the run's eval.jsonl. ConfigError when there is nothing to ask.
    """
    cfg = read_run(run_dir)[0]
    items = evaluate.parse_prompts(prompts)
    items += evaluate.items_from_rows(evaluate.heldout_rows(cfg)) if use_heldout else []
    if not items:
        raise ConfigError("no prompts: type some, one per line" + (
            " (this run has no held-out split)" if use_heldout else ", or tick the run's held-out split"))
    system = system_text(system_prompt, run_dir)
    if system:  # items that bring their own system message keep it
        items = [replace(it, prompt=with_system(it.messages(), system)) for it in items]
    return evaluate.evaluate_run(run_dir, items=items, max_new_tokens=max_new_tokens, engine=engine, pane=pane)
