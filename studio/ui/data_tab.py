"""Data tab: a preset dataset, an upload or a hub name; the detected format; a preview of rendered examples
with the trained part highlighted; and a token-length histogram with the max_seq_len cut."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from studio import data
from studio import models, objectives
from studio.config import ConfigError, DataSpec, RunConfig
from studio.data import preference, quality
from studio.data.formats import FORMATS, detect
from studio.data.sources import read_records
from studio.ui import paths, plots
from studio.ui.form import Form, field_widget
from studio.ui.pair_view import pair_summary, prompt_summary

__all__ = ["DataTab", "build_data_tab", "preset_files", "use_upload", "preview_view", "render_example",
           "inspect_source", "use_hub", "source_groups", "MAP_FIELDS", "strictness_view"]

UPLOAD_TYPES = [".json", ".jsonl", ".csv", ".parquet"]
PRESET_DATA = Path("presets") / "data"


MAP_FIELDS = tuple(dict.fromkeys(c for f in FORMATS.values() for c in f.required + f.optional))
"""Every column name a format reads, each with its own mapping dropdown (shown for the format in use)."""
SOURCES = ("file or folder", "hub dataset")
_NOT_MAPPED = ("(its own name)", "")
_SAMPLE_ROWS = 200  # detection looks at this many rows, and so does the column list


@dataclass
class DataTab:
    source: gr.Radio
    file_group: gr.Group
    hub_group: gr.Group
    path: gr.Dropdown
    upload: gr.File
    hub_name: gr.Textbox
    hub_message: gr.Markdown
    format: gr.Dropdown
    hub_config: gr.Textbox
    split: gr.Textbox
    columns: gr.Markdown
    mapping: list  # one gr.Dropdown per MAP_FIELDS entry, registered as data.columns.<field>
    examples: gr.Slider
    preview_button: gr.Button
    summary: gr.Markdown
    preview: gr.HTML
    lengths: gr.Plot
    strictness_button: gr.Button | None = None
    strictness: gr.Plot | None = None


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


_samples: dict[tuple, list] = {}


def _sample(path: str, hub_config: str | None, split: str) -> list:
    """The first rows of a source, kept per file version so a format change does not read it again."""
    target = Path(path).expanduser()
    stamp = (target.stat().st_mtime_ns, target.stat().st_size) if target.exists() else None
    key = (str(target.resolve()) if paths.is_local(path) else path, stamp, hub_config, split)
    if key not in _samples:
        _samples.clear()  # one source at a time: the rows may be large
        _samples[key] = read_records(path, hub_config=hub_config or None, split=split or "train")[:_SAMPLE_ROWS]
    return _samples[key]


def _found_columns(records: list) -> list[str]:
    found: list[str] = []
    for rec in records:
        if isinstance(rec.data, dict):
            found += [str(k) for k in rec.data if str(k) not in found]
    return found


def _mapping_updates(shown: str | None, columns: list[str], current: tuple) -> list:
    """One update per MAP_FIELDS dropdown: the format's fields show, choices are the file's columns."""
    fmt = FORMATS.get(shown or "")  # preference formats map their columns in YAML (data.columns)
    fields = fmt.required + fmt.optional if fmt else ()
    choices = [_NOT_MAPPED] + [(c, c) for c in columns]
    return [gr.update(visible=name in fields, choices=choices, value=value if value in columns else "")
            for name, value in zip(MAP_FIELDS, current)]


def inspect_source(path: str | None, fmt: str = "auto", hub_config: str | None = None, split: str = "train",
                   *current: str) -> tuple:
    """The detected format and the columns of the chosen source, and the mapping dropdowns for its format.

    ``current`` holds the mapping dropdowns' values (MAP_FIELDS order); those naming a column the source
    has are kept, so a run's settings loaded from the Runs tab keep their mapping.

    Returns:
        (markdown, *dropdown updates).
    """
    current = tuple(current) + ("",) * (len(MAP_FIELDS) - len(current))
    if not (path or "").strip():
        return ("", *_mapping_updates(None, [], current))
    mapping = {name: value for name, value in zip(MAP_FIELDS, current) if value}
    try:
        records = _sample(paths.check(path, "data.path"), hub_config, split)
    except ConfigError as err:
        return ("**Cannot read the data:** " + "; ".join(err.problems), *_mapping_updates(None, [], current))
    columns = _found_columns(records)
    paired = preference.detect(records, mapping)
    try:
        detected = paired.name if paired else detect(records, mapping, path).name
    except ConfigError:
        detected = None
    shown = detected if fmt in (None, "", "auto") else fmt
    about = (paired or FORMATS.get(detected or "")).about if detected else ""
    line = (f"**Detected format:** {detected} ({about})" if detected else
            "**Detected format:** none fits these columns: pick a format above, then map its fields below")
    text = f"{line}  \n**Columns:** {', '.join(columns) or 'none'}"
    if shown in FORMATS:
        text += f"  \nMap **{shown}**'s fields to your columns (left as *{_NOT_MAPPED[0]}*: the same name)."
    return (text, *_mapping_updates(shown, columns, current))


def use_hub(name: str | None) -> tuple:
    """A hub dataset name -> data.path; a local path typed here is sent back to the file picker."""
    name = (name or "").strip()
    if not name:
        return gr.update(), ""
    if paths.is_local(name):
        return gr.update(), f"`{name}` is a file or folder here: choose it under *{SOURCES[0]}*."
    return gr.update(value=name), f"Using the hub dataset `{name}`."


def source_groups(source: str) -> tuple:
    """Show the file picker or the hub fields."""
    return gr.update(visible=source != SOURCES[1]), gr.update(visible=source == SOURCES[1])


def render_example(runs: list[tuple[str, bool]]) -> str:
    """One example as HTML: the tokens that carry loss are highlighted."""
    parts = [f"<mark class='trained'>{html.escape(text)}</mark>" if trained else html.escape(text)
             for text, trained in runs]
    return f"<pre class='example'>{''.join(parts)}</pre>"


_PREVIEW_CSS = ("<style>.example{white-space:pre-wrap;font-size:12px;border:1px solid var(--border-color-primary);"
                "padding:6px;border-radius:4px}.trained{background:#c7f0c2;color:#111}</style>")


def preview_view(cfg: RunConfig, n: int = 3) -> tuple[str, str, go.Figure]:
    """Summary, rendered examples and length histogram for the config's data (ConfigError -> message)."""
    tokenizer = None
    try:
        tokenizer = models.load_tokenizer(paths.check_config(cfg).model)
        view = data.preview(cfg, tokenizer, n=int(n))
    except ConfigError as err:
        problems = err.problems
        pairs, prompt_problems = _pairs_or_prompts(cfg, tokenizer, int(n))
        if pairs:  # preference rows (prompt / chosen / rejected): shown as pairs; prompt-only rows: the prompts
            return (*pairs, plots.empty("Tokens per example"))
        if prompt_problems and objectives.get(cfg.train.objective.name).online:
            problems = prompt_problems  # an objective that writes its own answers reads prompt rows: why none
        return "**Cannot read the data:** " + "; ".join(problems), "", plots.empty("Tokens per example")
    lines = [f"**Format:** {view.format} · **rows:** {view.rows} · **skipped:** {view.skipped} · "
             f"**longer than max_seq_len ({view.max_seq_len}):** {view.over_max}"]
    lines += [f"- {reason}" for reason in view.skipped_examples]
    lines += [f"- quality filter {line}" for line in view.quality]
    lines += [f"- mixture {line}" for line in view.mixture]
    body = _PREVIEW_CSS + "<p>Highlighted: the tokens the model learns to produce.</p>"
    body += "".join(render_example(e) for e in view.examples)
    return "\n".join(lines), body, plots.length_histogram(view.lengths, view.max_seq_len)


def strictness_view(cfg: RunConfig) -> go.Figure:
    """Rows kept and diversity as the duplicate filters get stricter (data.quality.strictness_curve), for the
    config's data; a titled empty chart saying why when the data cannot be read."""
    try:
        rows = data.load_rows(paths.check_config(cfg).data).rows
    except ConfigError as err:
        return plots.empty("Cannot read the data: " + "; ".join(err.problems)[:120])
    return plots.strictness_chart(quality.strictness_curve(rows))


def _pairs_or_prompts(cfg: RunConfig, tokenizer, n: int) -> tuple[tuple[str, str] | None, list[str]]:
    """(the pair view when the data holds preference rows, else the prompt view when it holds prompt rows, else
    None; why the rows are not prompt rows, empty when they are or the tokenizer did not load)."""
    if tokenizer is None:
        return None, []
    try:
        return pair_summary(cfg, tokenizer, n), []
    except ConfigError:
        pass
    try:
        return prompt_summary(cfg, tokenizer, n), []
    except ConfigError as err:
        return None, err.problems


def _mapping_widgets(form: Form) -> list:
    """One dropdown per format field, in the form as data.columns.<field>; hidden until a format needs it."""
    widgets = []
    with gr.Row():
        for name in MAP_FIELDS:
            widgets.append(form.add(f"data.columns.{name}", gr.Dropdown(
                [_NOT_MAPPED], value="", allow_custom_value=True, visible=False, label=f"{name} ←", min_width=140,
                info="your column", elem_id=f"data-map-{name}")))
    return widgets


def build_data_tab(form: Form) -> DataTab:
    """Source (file or hub), format, column mapping and masking settings (in ``form``); preview, histogram."""
    presets = preset_files()
    default = DataSpec().path
    with gr.Row():
        with gr.Column(scale=3):
            source = gr.Radio(list(SOURCES), value=SOURCES[0], show_label=False, elem_id="data-source")
            with gr.Group() as file_group:
                path = form.add("data.path", gr.Dropdown(
                    presets or [default], value=default if default in presets or not presets else presets[0],
                    allow_custom_value=True, label="dataset", elem_id="data-path",
                    info="a preset, an uploaded file, or a local .json/.jsonl/.csv/.parquet file or folder"))
                upload = gr.File(label="upload a dataset", file_types=UPLOAD_TYPES, type="filepath",
                                 elem_id="data-upload", height=90)
            with gr.Group(visible=False) as hub_group:
                hub_name = gr.Textbox(label="hub dataset", placeholder="org/name", elem_id="data-hub-name",
                                      info="a dataset name on the Hugging Face hub (press Enter to use it)")
                with gr.Row():
                    hub_config = form.add("data.hub_config", field_widget(DataSpec, "hub_config",
                                                                          elem_id="data-hub-config"))
                    split = form.add("data.split", field_widget(DataSpec, "split", elem_id="data-split"))
                hub_message = gr.Markdown(elem_id="data-hub-message")
            with gr.Row():
                fmt = form.add("data.format", field_widget(DataSpec, "format", elem_id="data-format"))
                form.add("data.train_on", field_widget(DataSpec, "train_on"))
            columns = gr.Markdown(elem_id="data-columns")
            mapping = _mapping_widgets(form)
            with gr.Row():
                form.add("data.packing", field_widget(DataSpec, "packing"))
                form.add("data.val_fraction", field_widget(DataSpec, "val_fraction"))
            with gr.Accordion("more data settings", open=False):
                form.add("data.system_prompt", field_widget(DataSpec, "system_prompt"))
                form.add("data.max_rows", field_widget(DataSpec, "max_rows"))
            with gr.Accordion("quality filters (applied before training)", open=False, elem_id="data-quality"):
                for name in ("dedup", "near_threshold", "min_tokens", "max_tokens", "language"):
                    form.add(f"data.{name}", field_widget(DataSpec, name, elem_id=f"data-{name.replace('_', '-')}"))
                strictness_button = gr.Button("Size against diversity as filtering gets stricter", size="sm",
                                              elem_id="data-strictness-btn")
                strictness = gr.Plot(plots.empty("Size against diversity"), show_label=False,
                                     elem_id="data-strictness")
            with gr.Accordion("tasks and replay (mix general data in against forgetting)", open=False,
                              elem_id="data-mix"):
                for name in ("task", "replay_path", "replay_share"):
                    form.add(f"data.{name}", field_widget(DataSpec, name, elem_id=f"data-{name.replace('_', '-')}"))
        with gr.Column(scale=2):
            examples = gr.Slider(1, 20, value=3, step=1, precision=0, label="examples to show")
            preview_button = gr.Button("Preview", elem_id="data-preview-btn")
            summary = gr.Markdown(elem_id="data-summary")
            lengths = gr.Plot(plots.empty("Tokens per example"), show_label=False, elem_id="data-lengths")
    preview = gr.HTML(elem_id="data-preview")
    return DataTab(source, file_group, hub_group, path, upload, hub_name, hub_message, fmt, hub_config, split,
                   columns, mapping, examples, preview_button, summary, preview, lengths, strictness_button,
                   strictness)


def wire_data_tab(tab: DataTab, form: Form, demo: gr.Blocks | None = None) -> None:
    """Upload or hub name -> data.path; a new source or format -> columns and mapping; Preview -> examples."""
    tab.upload.upload(use_upload, tab.upload, tab.path, api_visibility="private")
    tab.source.change(source_groups, tab.source, [tab.file_group, tab.hub_group], api_visibility="private",
                      show_progress="hidden")
    for trigger in (tab.hub_name.submit, tab.hub_name.blur):
        trigger(use_hub, tab.hub_name, [tab.path, tab.hub_message], api_visibility="private")

    inspect_inputs = [tab.path, tab.format, tab.hub_config, tab.split, *tab.mapping]
    inspect_outputs = [tab.columns, *tab.mapping]
    for trigger in (tab.path.change, tab.format.change):
        trigger(inspect_source, inspect_inputs, inspect_outputs, concurrency_limit=2, trigger_mode="always_last",
                show_progress="hidden", api_visibility="private")
    if demo is not None:
        demo.load(inspect_source, inspect_inputs, inspect_outputs, show_progress="hidden", api_visibility="private")

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

    def _strictness(*values):
        try:
            return strictness_view(form.to_config(*values))
        except ConfigError as err:
            return plots.empty("Check the settings: " + "; ".join(err.problems)[:120])

    if tab.strictness_button is not None:
        tab.strictness_button.click(_strictness, form.components, tab.strictness, concurrency_limit=2,
                                    api_visibility="private")
