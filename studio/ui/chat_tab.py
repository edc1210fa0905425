"""Chat tab: the base model and a tuned run side by side, streaming together from one copy of the weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from studio import models
from studio.config import ConfigError, ModelSpec, RunConfig
from studio.ui import paths, state

__all__ = ["ChatTab", "build_chat_tab", "chat_runs", "flatten", "chat_stream", "stop_chat", "engine_for"]


@dataclass
class ChatTab:
    run: gr.Dropdown
    base: gr.Chatbot
    tuned: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    stop: gr.Button
    clear: gr.Button
    note: gr.Markdown
    gen: list  # max_new_tokens, temperature, top_p, top_k, repetition_penalty, greedy


def chat_runs(root: str | None = None) -> list[tuple[str, str]]:
    """(name, folder) of the runs that have a trained result to chat with, newest first."""
    runs = state.core("runs")
    if runs is None:
        return []
    root = root or str(state.get().runs_root)
    return [(r.name, str(r.path)) for r in runs.list_runs(root)
            if r.adapter_bytes and r.status in ("done", "stopped")]


def flatten(content: Any) -> str:
    """A Chatbot message's content as plain text (Gradio 6 gives a list of blocks on the way in)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "".join(flatten(c) for c in content)
    return "" if content is None else str(content)


def _plain(history: list | None) -> list[dict]:
    return [{"role": m["role"], "content": flatten(m.get("content"))} for m in history or []
            if isinstance(m, dict) and m.get("role") in ("user", "assistant", "system")]


def engine_for(model_id: str, run_dir: str | None):
    """The app's chat engine for the run's base (or ``model_id``), with the run's adapter loaded.

    Returns:
        (engine, adapter name or None). A different base model replaces the engine (one copy at a time).
    """
    chat = state.core("chat")
    app = state.get()
    run_dir, model_id = paths.check_run_dir(run_dir), paths.check_model(model_id)
    spec = RunConfig.load(Path(run_dir) / "config.yaml").model if run_dir else ModelSpec(id=model_id or "embedded")
    key = (models.resolve(spec), spec.quantization, spec.dtype)
    with app.lock:
        if app.chat is None or app.chat_key != key:
            app.chat, app.chat_key = None, None  # let the old weights go before loading new ones
            app.chat, app.chat_key = chat.ChatEngine(spec), key
        engine = app.chat
        if not run_dir:
            return engine, None
        name = Path(run_dir).name
        if name not in engine.adapters():
            engine.add_adapter(name, run_dir)
    return engine, name


def chat_stream(message: str, base_history: list | None, tuned_history: list | None, run_dir: str | None,
                model_id: str = "embedded", *gen_values) -> Iterator[tuple[list, list, str]]:
    """Send ``message`` to both panes and yield (base history, tuned history, note) as tokens arrive."""
    base_history, tuned_history = _plain(base_history), _plain(tuned_history)
    message = (message or "").strip()
    chat = state.core("chat")
    if not message or chat is None:
        yield base_history, tuned_history, ("" if chat else state.missing("Chat"))
        return
    user = {"role": "user", "content": message}
    try:
        gen = chat.GenSettings(*_gen_args(gen_values))
        engine, name = engine_for(model_id, run_dir)
    except ConfigError as err:
        yield base_history, tuned_history, "**Cannot chat:** " + "; ".join(err.problems)
        return
    note = "" if name else "Pick a run to see the tuned model beside the base."
    if name and engine.note(name):
        note = engine.note(name)
    conversations = {chat.BASE: base_history + [user]}
    if name:
        conversations[name] = tuned_history + [user]
    base_out, tuned_out = base_history + [user], tuned_history + ([user] if name else [])
    for texts in engine.stream(conversations, panes=list(conversations), gen=gen):
        base_now = base_out + [{"role": "assistant", "content": texts.get(chat.BASE, "")}]
        tuned_now = tuned_out + ([{"role": "assistant", "content": texts.get(name, "")}] if name else [])
        yield base_now, tuned_now, note


def _gen_args(values: tuple) -> tuple:
    if not values:
        return ()
    max_new, temperature, top_p, top_k, repetition, greedy = values
    return int(max_new), float(temperature), float(top_p), int(top_k), float(repetition), bool(greedy)


def stop_chat() -> None:
    """End the answer under way in both panes."""
    engine = state.get().chat
    if engine is not None:
        engine.stop()


def build_chat_tab() -> ChatTab:
    """Run picker, two chat panes, the message box and generation settings."""
    with gr.Row():
        run = gr.Dropdown(chat_runs(), value=None, label="tuned run", scale=4, elem_id="chat-run",
                          info="a finished run; its adapter is added to the one copy of the base weights")
        refresh = gr.Button("↻ runs", scale=1, size="sm")
    with gr.Row():
        base = gr.Chatbot(label="base model", height=380, elem_id="chat-base")
        tuned = gr.Chatbot(label="tuned model", height=380, elem_id="chat-tuned")
    note = gr.Markdown(elem_id="chat-note")
    with gr.Row():
        message = gr.Textbox(placeholder="Ask both models something…", show_label=False, scale=6,
                             elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1, elem_id="chat-clear")
    with gr.Accordion("generation settings", open=False):
        with gr.Row():
            gen = [gr.Slider(1, 1024, value=128, step=1, precision=0, label="max new tokens"),
                   gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="temperature"),
                   gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top p"),
                   gr.Slider(0, 200, value=50, step=1, precision=0, label="top k"),
                   gr.Slider(0.8, 2.0, value=1.1, step=0.05, label="repetition penalty"),
                   gr.Checkbox(False, label="greedy (reproducible)")]
    refresh.click(lambda: gr.update(choices=chat_runs()), None, run, api_visibility="private")
    return ChatTab(run, base, tuned, message, send, stop, clear, note, gen)


def wire_chat_tab(tab: ChatTab, model_id: gr.Dropdown) -> None:
    inputs = [tab.message, tab.base, tab.tuned, tab.run, model_id, *tab.gen]
    outputs = [tab.base, tab.tuned, tab.note]
    sent = tab.send.click(chat_stream, inputs, outputs, concurrency_limit=2, show_progress="hidden", api_name="chat")
    submitted = tab.message.submit(chat_stream, inputs, outputs, concurrency_limit=2, show_progress="hidden",
                                   api_visibility="private")
    for event in (sent, submitted):
        event.then(lambda: "", None, tab.message, api_visibility="private")
    tab.stop.click(stop_chat, None, None, concurrency_limit=None, api_visibility="private")
    tab.clear.click(lambda: ([], [], ""), None, outputs, api_visibility="private")
    tab.run.focus(lambda: gr.update(choices=chat_runs()), None, tab.run, api_visibility="private")
