"""The Chat tab's Evaluate accordion: a prompt set answered by the base and the tuned run, scored, saved.

It runs ``studio.chat_session.evaluate_prompts`` on the chat's own engine, so no second copy of the weights
is loaded, and every answer waits its turn on the engine's lock like a chat message does. This module holds
the widgets, the wiring and the report's table and summary line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from studio import chat, chat_session, evaluate, faults
from studio.config import ConfigError
from studio.metrics import LABELS, METRICS
from studio.ui import chat_panes

__all__ = ["EvalPanel", "build_eval_panel", "wire_eval_panel", "evaluate_prompts"]

_ANSWERS = ["prompt", "base answer", "tuned answer"]
_SHOWN = ("rougeL", "bleu", "chrf", "exact_match", "contains")  # per row; the summary line has every metric
_SCORES = ["reference"] + [f"{LABELS[k]} {p}" for k in _SHOWN for p in ("base", "tuned")]


@dataclass
class EvalPanel:
    prompts: gr.Textbox
    heldout: gr.Checkbox
    run: gr.Button
    table: gr.Dataframe
    summary: gr.Markdown


def _table(report) -> pd.DataFrame:
    scored = any(r.get("scores") for r in report.rows)
    rows = []
    for r in report.rows:
        row = [r["prompt"], r["answers"]["base"], r["answers"]["tuned"]]
        if scored:
            sc = r.get("scores") or {}
            row += [r.get("reference") or "", *(_num(sc.get(p, {}).get(k), 3) for k in _SHOWN
                                                 for p in ("base", "tuned"))]
        rows.append(row)
    return pd.DataFrame(rows, columns=_ANSWERS + (_SCORES if scored else []))


def _num(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}g}"


def _summary(report, saved: Path) -> str:
    s = report.summary
    parts = [f"**{p}** loss {_num(s[p]['loss']) or '–'}, perplexity {_num(s[p]['perplexity']) or '–'}"
             + "".join(f", {LABELS[k]} {_num(s[p][k], 3)}" for k in METRICS if s[p].get(k) is not None)
             for p in ("base", "tuned")]
    on = f"loss on {s['loss_on']}" if s.get("loss_on") else "no loss: no held-out split and no prompt has a reference"
    return f"{' · '.join(parts)} ({on}; {s['prompts']} prompts) · saved `{saved}`"


def evaluate_prompts(prompts: str | None, use_heldout: bool, run_dir: str | None, model_id: str = "embedded",
                     system_prompt: str | None = "", max_new_tokens: int = 96) -> tuple[pd.DataFrame, str]:
    """Answer the typed prompts (and the run's held-out split if asked) with the base and the tuned run.

    Args:
        prompts: one per line; ``prompt => reference`` adds a reference to score answers against.
        use_heldout: add the run's held-out rows (its val_fraction split and val_path) as prompts.
        run_dir: the tuned run (the Chat tab's pick); model_id: the Model tab's model, used only without a run.
        system_prompt: put before every prompt; empty: the one the run was trained with, as the CLI does.
        max_new_tokens: longest answer; answers are greedy so that a rerun gives the same table.

    Returns:
        (table of prompt / base answer / tuned answer [/ reference / scores], one Markdown line: loss and
        perplexity per pane and where eval.jsonl was saved, or what went wrong).
    """
    empty = pd.DataFrame(columns=_ANSWERS)
    if not run_dir:
        return empty, "Pick a tuned run above to evaluate it against its base."
    busy = chat.training_busy_message()
    if busy:  # the engine would give this line as every answer, and it would be saved as the result
        return empty, busy
    try:
        engine, name = chat_panes.engine_for(model_id, run_dir)
        report = chat_session.evaluate_prompts(engine, name, run_dir, prompts, use_heldout, system_prompt,
                                               int(max_new_tokens))
    except ConfigError as err:
        return empty, "**Cannot evaluate:** " + "; ".join(err.problems)
    except Exception as err:  # noqa: BLE001 - the page shows one line, not a traceback
        return empty, f"**Evaluation failed:** {faults.one_line(err)}"
    return _table(report), _summary(report, evaluate.eval_path(run_dir))


def build_eval_panel() -> EvalPanel:
    """The Evaluate accordion: prompts, the held-out choice, the button, the table and the summary line."""
    with gr.Accordion("Evaluate", open=False):
        prompts = gr.Textbox(label="prompts", lines=4, elem_id="eval-prompts",
                             placeholder="Who are you?\nWhat is LoRA? => A low-rank adapter.",
                             info=f"one per line; 'prompt {evaluate.REFERENCE_ARROW} reference' scores answers "
                                  "against it")
        with gr.Row():
            heldout = gr.Checkbox(False, label="also the run's held-out split", elem_id="eval-heldout",
                                  info="its val_fraction rows and val_path, as in training")
            run = gr.Button("Evaluate base vs tuned", variant="primary", elem_id="eval-run")
        table = gr.Dataframe(headers=_ANSWERS, interactive=False, wrap=True, elem_id="eval-table")
        summary = gr.Markdown(elem_id="eval-summary")
    return EvalPanel(prompts, heldout, run, table, summary)


def wire_eval_panel(panel: EvalPanel, run: gr.Dropdown, model_id: gr.Dropdown, system: gr.Textbox,
                    max_new_tokens: gr.Slider) -> None:
    """The Evaluate button on the Chat tab's run, model, system prompt and max new tokens."""
    # One evaluation at a time; its answers queue on the engine's lock with the chats'.
    panel.run.click(evaluate_prompts, [panel.prompts, panel.heldout, run, model_id, system, max_new_tokens],
                    [panel.table, panel.summary], concurrency_limit=1, api_visibility="private")
