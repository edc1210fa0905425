"""'Queue' (Train tab): queue the form's run to start when the one training now ends; see and remove queued runs.

The queue is a file in the runs folder (studio.run_queue), so it survives a restart; the studio's QueueRunner
starts the next entry whenever no run is going.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio import run_queue
from studio.config import ConfigError, RunConfig
from studio.ui import paths, state
from studio.ui.form import Form

__all__ = ["QueuePanel", "build_queue_panel", "wire_queue_panel", "queue_run", "queued", "remove_queued",
           "start_runner"]

_runner: list = []  # the process's one QueueRunner, started with the studio


def _queue():
    return run_queue.RunQueue(state.get().runs_root)


def start_runner():
    """Start the process's QueueRunner for the studio's runs folder (once); it picks up a queue left on disk."""
    if not _runner:
        _runner.append(run_queue.QueueRunner(_queue()).start())
    elif _runner:
        _runner[0].queue = _queue()  # the studio was built again for another runs folder: follow that one
    return _runner[0] if _runner else None


def queue_run(cfg: RunConfig) -> str:
    """Queue ``cfg`` in the studio's runs folder; the message says its place."""
    queue = _queue()
    cfg.train.output_dir = str(state.get().runs_root)
    try:
        entry = queue.add(paths.check_config(cfg))
    except ConfigError as err:
        return "**Cannot queue:** " + "; ".join(err.problems)
    return f"Queued **{entry['name']}** ({len(queue.entries())} waiting); it starts when the run before it ends."


def queued() -> list[list]:
    """[id, name, method, steps] per queued run, first to start first."""
    queue = _queue()
    rows = []
    for e in queue.entries() if queue else []:
        cfg = e.get("config") or {}
        train = cfg.get("train") or {}
        rows.append([e["id"], e["name"], (cfg.get("method") or {}).get("name", "?"),
                     train.get("max_steps") or f"{train.get('epochs', '?')} epochs"])
    return rows


def remove_queued(entry_id: str | None) -> str:
    """Remove one entry before it starts."""
    queue = _queue()
    if queue is None or not entry_id:
        return "Pick a queued run first."
    return f"Removed {entry_id} from the queue." if queue.remove(entry_id) else f"{entry_id} is no longer queued."


@dataclass
class QueuePanel:
    add: gr.Button
    table: gr.Dataframe
    pick: gr.Dropdown
    remove: gr.Button
    message: gr.Markdown


def build_queue_panel() -> QueuePanel:
    with gr.Accordion("Queue", open=False, elem_id="run-queue"):
        add = gr.Button("Queue it: start when the current run ends", elem_id="queue-btn")
        table = gr.Dataframe(queued(), headers=["id", "run", "method", "steps"], interactive=False,
                             elem_id="queue-table")
        with gr.Row():
            pick = gr.Dropdown([r[0] for r in queued()], label="queued run", scale=3, elem_id="queue-pick")
            remove = gr.Button("Remove", scale=1, elem_id="queue-remove")
        message = gr.Markdown(elem_id="queue-message")
    return QueuePanel(add, table, pick, remove, message)


def wire_queue_panel(panel: QueuePanel, form: Form) -> None:
    start_runner()

    def _view(text):
        rows = queued()
        return text, rows, gr.update(choices=[r[0] for r in rows], value=None)

    def _add(*values):
        try:
            cfg = form.to_config(*values)
        except ConfigError as err:
            return _view("**Check the settings:** " + "; ".join(err.problems))
        return _view(queue_run(cfg))

    outputs = [panel.message, panel.table, panel.pick]
    panel.add.click(_add, form.components, outputs, api_name="queue_run")
    panel.remove.click(lambda i: _view(remove_queued(i)), panel.pick, outputs, api_visibility="private")
    panel.pick.focus(lambda: gr.update(choices=[r[0] for r in queued()]), None, panel.pick, api_visibility="private")
