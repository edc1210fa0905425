"""Chat tab: the base model, a tuned run and up to two more runs side by side, streaming together from one
copy of the weights; the Evaluate accordion (eval_panel) scores a prompt set on the same engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from studio import chat, chat_session
from studio.chat_stream import GenSettings
from studio.config import ConfigError
from studio.ui import bench_panel, chat_panes, eval_panel, state

__all__ = ["ChatTab", "build_chat_tab", "wire_chat_tab", "chat_runs", "flatten", "chat_stream", "stop_chat",
           "extra_panes"]


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
    compare: gr.Dropdown
    extras: list  # two Chatbots, hidden until a run is picked to compare
    system: gr.Textbox
    refresh: gr.Button
    evaluation: eval_panel.EvalPanel
    benchmarks: bench_panel.BenchPanel


def chat_runs(root: str | None = None) -> list[tuple[str, str]]:
    """(name, folder) of the runs that have a trained result to chat with, newest first."""
    return chat_session.chat_runs(root or str(state.get().runs_root))


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


def chat_stream(message: str, base_history: list | None, tuned_history: list | None, run_dir: str | None,
                model_id: str = "embedded", max_new_tokens: int | None = None, temperature: float | None = None,
                top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
                greedy: bool | None = None, system_prompt: str | None = None, compare: list[str] | None = None,
                extra_1: list | None = None, extra_2: list | None = None) -> Iterator[tuple]:
    """Send ``message`` to every pane and yield (base, tuned, note, extra 1, extra 2, message box) as tokens arrive.

    While a training run in this process uses the model, nothing is loaded or sent: the note says so, the
    conversations stay as they were and the message stays in its box to send once the run has ended.

    Args:
        run_dir: the tuned run beside the base; ``compare``: up to two more runs, one extra pane each.
        max_new_tokens..greedy: generation settings (None: GenSettings' default).
        system_prompt: put before every conversation; empty: the one the first run was trained with, if any.
        extra_1, extra_2: the extra panes' histories.
    """
    histories = [_plain(h) for h in (base_history, tuned_history, extra_1, extra_2)]
    typed, message = message, (message or "").strip()
    if not message:
        yield _outputs(histories, "", typed)
        return
    busy = chat.training_busy_message()
    if busy:
        yield _outputs(histories, f"**Not sent:** {busy}", typed)
        return
    try:
        gen = GenSettings(**_gen_kwargs(max_new_tokens, temperature, top_p, top_k, repetition_penalty, greedy))
        runs = [run_dir, *list(compare or [])[:2]]
        engine, names, notes = chat_panes.open_panes(model_id, runs)
        system = chat_session.system_text(system_prompt, next((r for r in runs if r), None))
    except ConfigError as err:
        yield _outputs(histories, "**Cannot chat:** " + "; ".join(err.problems), typed)
        return
    note = "  \n".join(notes if run_dir else ["Pick a run to see the tuned model beside the base.", *notes])
    for answered in chat_session.answer_in_panes(engine, names, histories, message, system, gen):
        yield _outputs(answered, note)


def _outputs(histories: list[list], note: str, message: str = "") -> tuple:
    base, tuned, extra_1, extra_2 = histories
    return base, tuned, note, extra_1, extra_2, message  # the note stays third: older callers of /chat read three


_GEN_FIELDS = (("max_new_tokens", int), ("temperature", float), ("top_p", float), ("top_k", int),
               ("repetition_penalty", float), ("greedy", bool))


def _gen_kwargs(*values) -> dict:
    # Sliders hand back floats; None keeps GenSettings' own default, so the defaults live in one place.
    return {name: cast(v) for (name, cast), v in zip(_GEN_FIELDS, values) if v is not None}


def extra_panes(compare: list[str] | None) -> tuple[dict, dict]:
    """Show one extra pane per compared run, named after it, and hide the rest.

    The panes start empty: a pane's history belongs to the run it was had with.
    """
    runs = list(compare or [])[:2]
    return tuple(gr.update(visible=True, label=Path(runs[i]).name, value=[]) if i < len(runs)
                 else gr.update(visible=False, value=[]) for i in range(2))


def stop_chat() -> None:
    """End the answer under way in every pane."""
    engine = state.get().chat
    if engine is not None:
        engine.stop()


def build_chat_tab() -> ChatTab:
    """Run pickers, the chat panes, the message box, generation settings and the Evaluate accordion."""
    with gr.Row():
        run = gr.Dropdown(chat_runs(), value=None, label="tuned run", scale=4, elem_id="chat-run",
                          info="a finished run; its adapter is added to the one copy of the base weights")
        compare = gr.Dropdown(chat_runs(), value=[], multiselect=True, max_choices=2, label="also compare",
                              scale=4, elem_id="chat-compare",
                              info="up to two more finished runs of the same base model, one pane each")
        refresh = gr.Button("↻ runs", scale=1, size="sm")
    with gr.Row():
        base = gr.Chatbot(label="base model", height=380, elem_id="chat-base")
        tuned = gr.Chatbot(label="tuned model", height=380, elem_id="chat-tuned")
        extras = [gr.Chatbot(label=f"compared run {i}", height=380, visible=False, elem_id=f"chat-extra-{i}")
                  for i in (1, 2)]
    note = gr.Markdown(elem_id="chat-note")
    with gr.Row():
        message = gr.Textbox(placeholder="Ask every model something…", show_label=False, scale=6,
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
        system = gr.Textbox(label="system prompt", lines=2, elem_id="chat-system",
                            info="put before every conversation in every pane; empty: the one the run was "
                                 "trained with, if any")
    evaluation = eval_panel.build_eval_panel()
    return ChatTab(run, base, tuned, message, send, stop, clear, note, gen, compare, extras, system, refresh,
                   evaluation, bench_panel.build_bench_panel())


def wire_chat_tab(tab: ChatTab, model_id: gr.Dropdown) -> None:
    """Chat events (the public /chat endpoint among them), the pane switches and the Evaluate button."""
    inputs = [tab.message, tab.base, tab.tuned, tab.run, model_id, *tab.gen, tab.system, tab.compare, *tab.extras]
    outputs = [tab.base, tab.tuned, tab.note, *tab.extras, tab.message]  # the box empties once a message is sent
    tab.send.click(chat_stream, inputs, outputs, concurrency_limit=2, show_progress="hidden", api_name="chat")
    tab.message.submit(chat_stream, inputs, outputs, concurrency_limit=2, show_progress="hidden",
                       api_visibility="private")
    tab.stop.click(stop_chat, None, None, concurrency_limit=None, api_visibility="private")
    tab.clear.click(lambda: ([], [], "", [], [], ""), None, outputs, api_visibility="private")
    tab.compare.change(extra_panes, tab.compare, tab.extras, api_visibility="private")
    pickers = [tab.run, tab.compare]
    tab.refresh.click(lambda: (gr.update(choices=chat_runs()),) * 2, None, pickers, api_visibility="private")
    for picker in pickers:
        picker.focus(lambda: gr.update(choices=chat_runs()), None, picker, api_visibility="private")
    eval_panel.wire_eval_panel(tab.evaluation, tab.run, model_id, tab.system, tab.gen[0])
    bench_panel.wire_bench_panel(tab.benchmarks, tab.run, tab.compare, chat_panes.open_panes)
