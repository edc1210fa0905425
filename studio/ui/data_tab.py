"""Data tab: a preset dataset, an upload or a hub name; the detected format; a preview of rendered examples
with the trained part highlighted; and a token-length histogram with the max_seq_len cut."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from studio import models
from studio.config import ConfigError, DataSpec, RunConfig
from studio.ui import paths, plots, state
from studio.ui.form import Form, field_widget

__all__ = ["DataTab", "build_data_tab", "preset_files", "use_upload", "preview_view", "render_example"]

UPLOAD_TYPES = [".json", ".jsonl", ".csv", ".parquet"]
PRESET_DATA = Path("presets") / "data"


@dataclass
class DataTab:
    path: gr.Dropdown
    upload: gr.File
    examples: gr.Slider
    preview_button: gr.Button
    summary: gr.Markdown
    preview: gr.HTML
    lengths: gr.Plot


def preset_files() -> list[str]:
    """The datasets shipped in presets/data."""
    if not PRESET_DATA.is_dir():
        return []
    return sorted(str(p) for p in PRESET_DATA.iterdir() if p.suffix in UPLOAD_TYPES)


def use_upload(file_path: str | None) -> dict:
    """Point data.path at an uploaded file (Gradio has already checked its size against the limit)."""
    if not file_path:
        return gr.update()
    return gr.update(value=file_path, choices=preset_files() + [file_path])


def render_example(runs: list[tuple[str, bool]]) -> str:
    """One example as HTML: the tokens that carry loss are highlighted."""
    parts = [f"<mark class='trained'>{html.escape(text)}</mark>" if trained else html.escape(text)
             for text, trained in runs]
    return f"<pre class='example'>{''.join(parts)}</pre>"


_PREVIEW_CSS = ("<style>.example{white-space:pre-wrap;font-size:12px;border:1px solid var(--border-color-primary);"
                "padding:6px;border-radius:4px}.trained{background:#c7f0c2;color:#111}</style>")


def preview_view(cfg: RunConfig, n: int = 3) -> tuple[str, str, go.Figure]:
    """Summary, rendered examples and length histogram for the config's data (ConfigError -> message)."""
    data = state.core("data")
    if data is None:
        return state.missing("Data preview"), "", plots.empty("Tokens per example")
    try:
        tokenizer = models.load_tokenizer(paths.check_config(cfg).model)
        view = data.preview(cfg, tokenizer, n=int(n))
    except ConfigError as err:
        return "**Cannot read the data:** " + "; ".join(err.problems), "", plots.empty("Tokens per example")
    lines = [f"**Format:** {view.format} · **rows:** {view.rows} · **skipped:** {view.skipped} · "
             f"**longer than max_seq_len ({view.max_seq_len}):** {view.over_max}"]
    lines += [f"- {reason}" for reason in view.skipped_examples]
    body = _PREVIEW_CSS + "<p>Highlighted: the tokens the model learns to produce.</p>"
    body += "".join(render_example(e) for e in view.examples)
    return "\n".join(lines), body, plots.length_histogram(view.lengths, view.max_seq_len)


def build_data_tab(form: Form) -> DataTab:
    """Source, format and masking settings (in ``form``); preview and histogram."""
    presets = preset_files()
    default = DataSpec().path
    with gr.Row():
        with gr.Column(scale=3):
            path = form.add("data.path", gr.Dropdown(
                presets or [default], value=default if default in presets or not presets else presets[0],
                allow_custom_value=True, label="dataset", elem_id="data-path",
                info="a preset, an uploaded file, a local .json/.jsonl/.csv/.parquet path or a hub dataset name"))
            upload = gr.File(label="upload a dataset", file_types=UPLOAD_TYPES, type="filepath",
                             elem_id="data-upload", height=90)
            with gr.Row():
                form.add("data.format", field_widget(DataSpec, "format"))
                form.add("data.train_on", field_widget(DataSpec, "train_on"))
            with gr.Row():
                form.add("data.packing", field_widget(DataSpec, "packing"))
                form.add("data.val_fraction", field_widget(DataSpec, "val_fraction"))
            with gr.Accordion("more data settings", open=False):
                form.add("data.system_prompt", field_widget(DataSpec, "system_prompt"))
                form.add("data.max_rows", field_widget(DataSpec, "max_rows"))
                with gr.Row():
                    form.add("data.hub_config", field_widget(DataSpec, "hub_config"))
                    form.add("data.split", field_widget(DataSpec, "split"))
        with gr.Column(scale=2):
            examples = gr.Slider(1, 20, value=3, step=1, precision=0, label="examples to show")
            preview_button = gr.Button("Preview", elem_id="data-preview-btn")
            summary = gr.Markdown(elem_id="data-summary")
            lengths = gr.Plot(plots.empty("Tokens per example"), show_label=False, elem_id="data-lengths")
    preview = gr.HTML(elem_id="data-preview")
    return DataTab(path, upload, examples, preview_button, summary, preview, lengths)


def wire_data_tab(tab: DataTab, form: Form) -> None:
    """Upload -> data.path; Preview (and a new source) -> summary, examples, histogram."""
    tab.upload.upload(use_upload, tab.upload, tab.path, api_visibility="private")

    def _preview(*values):
        try:
            cfg = form.to_config(*values[:-1])
        except ConfigError as err:
            return "**Check the settings:** " + "; ".join(err.problems), "", plots.empty("Tokens per example")
        return preview_view(cfg, values[-1])

    outputs = [tab.summary, tab.preview, tab.lengths]
    inputs = form.components + [tab.examples]
    tab.preview_button.click(_preview, inputs, outputs, concurrency_limit=2, api_name="preview_data")
    tab.path.change(_preview, inputs, outputs, concurrency_limit=2, trigger_mode="always_last",
                    api_visibility="private")
