"""Export and push panels (Runs tab): the picked run as an adapter, a merged model, GGUF files with an Ollama
Modelfile, or a GGUF LoRA adapter, written under exports/ beside the runs folder; or pushed to the hub with the
token from the environment or a saved login (the panel has no token field: nothing here ever stores one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio import export, gguf, hub
from studio.config import ConfigError
from studio.ui import state

__all__ = ["ExportPanel", "build_export_panel", "wire_export_panel", "export_folder", "run_export", "run_push",
           "token_note", "FORMATS", "QUANT_CHOICES"]

FORMATS = ["adapter", "merged", "gguf", "gguf-lora"]
QUANT_CHOICES = ["f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"]


@dataclass
class ExportPanel:
    fmt: gr.Radio
    quants: gr.CheckboxGroup
    export: gr.Button
    result: gr.Markdown
    repo: gr.Textbox
    private: gr.Checkbox
    push_fmt: gr.Radio
    token: gr.Markdown
    push: gr.Button
    pushed: gr.Markdown


def _run_dir(name: str, root: str | None) -> Path:
    # a name is a folder in the runs folder, never a path elsewhere
    return Path(root or state.get().runs_root) / Path(name).name


def export_folder(name: str, fmt: str, root: str | None = None) -> Path:
    """A new folder exports/<run>-<format>[-N] beside the runs folder."""
    base = Path(root or state.get().runs_root).resolve().parent / "exports"
    stem = f"{Path(name).name}-{fmt}"
    n = 1
    while (base / (stem if n == 1 else f"{stem}-{n}")).exists():
        n += 1
    return base / (stem if n == 1 else f"{stem}-{n}")


def _sizes(folder: Path, names: list[str]) -> str:
    rows = [f"| {n} | {(folder / n).stat().st_size / 2**20:.1f} MB |" for n in names]
    return "\n".join(["| file | size |", "|---|---|", *rows])


def run_export(name: str | None, fmt: str, quants: list[str] | None, root: str | None = None,
               progress=lambda fraction, text: None) -> str:
    """Export the run ``name`` as ``fmt``; markdown with the folder and each file's size, or the one-line reason."""
    if not name:
        return "Pick a run first."
    run, out = _run_dir(name, root), export_folder(name, fmt, root)
    say = lambda line: progress(0.0, line)  # noqa: E731 (the one-line build notice shows on the bar)
    try:
        if fmt == "gguf":
            done = gguf.export_gguf(run, out, quants=quants or ["f16"], progress=progress, say=say)
        elif fmt == "gguf-lora":
            done = gguf.export_gguf_lora(run, out, progress=progress, say=say)
        else:
            export.export_run(run, out, merge=fmt == "merged")
            files = sorted(p.name for p in out.iterdir() if p.suffix in (".safetensors", ".json"))
            return f"**Exported** to `{out}`\n\n" + _sizes(out, files)
    except ConfigError as err:
        return "**Cannot export:** " + "; ".join(err.problems)
    extra = f"\n\nOllama: `ollama create {Path(name).name} -f {done.modelfile}`" if done.modelfile else ""
    return f"**Exported** to `{out}`\n\n" + _sizes(out, list(done.files)) + extra


def token_note() -> str:
    """Whether a hub token is found (never the token itself)."""
    if hub.find_token():
        return "A hub token is found (HF_TOKEN or a saved login); it is used for the upload and never stored."
    return "No hub token: set HF_TOKEN or run `hf auth login` before starting the studio."


def run_push(name: str | None, repo: str, private: bool, fmt: str, quants: list[str] | None,
             root: str | None = None, progress=lambda fraction, text: None) -> str:
    """Push the run ``name`` to ``repo``; markdown with the repository's URL or the one-line reason."""
    if not name:
        return "Pick a run first."
    try:
        url = hub.push_run(_run_dir(name, root), (repo or "").strip(), private=bool(private), fmt=fmt,
                           quants=quants or ["q8_0"], progress=progress)
    except ConfigError as err:
        return "**Not pushed:** " + "; ".join(err.problems)
    return f"**Pushed** to {url}"


def build_export_panel() -> ExportPanel:
    """Two accordions under the run picker: Export, and Push to the hub."""
    with gr.Accordion("Export", open=False, elem_id="export-panel"):
        fmt = gr.Radio(FORMATS, value="gguf", label="format", elem_id="export-format",
                       info="gguf: merged, for llama.cpp / Ollama / LM Studio; gguf-lora: the LoRA beside the base")
        quants = gr.CheckboxGroup(QUANT_CHOICES, value=["f16"], label="GGUF types", elem_id="export-quants")
        export = gr.Button("Export", elem_id="export-go")
        result = gr.Markdown(elem_id="export-result")
    with gr.Accordion("Push to the hub", open=False, elem_id="push-panel"):
        repo = gr.Textbox(label="repository", placeholder="user/name", elem_id="push-repo")
        private = gr.Checkbox(value=True, label="private", elem_id="push-private")
        push_fmt = gr.Radio(["adapter", "merged", "gguf"], value="adapter", label="what to push", elem_id="push-format")
        token = gr.Markdown(elem_id="push-token")
        push = gr.Button("Push", elem_id="push-go")
        pushed = gr.Markdown(elem_id="push-result")
    return ExportPanel(fmt, quants, export, result, repo, private, push_fmt, token, push, pushed)


def wire_export_panel(panel: ExportPanel, run: gr.Dropdown) -> None:
    """Export and push the run picked in ``run``, with a progress bar."""
    def _export(name, fmt, quants, progress=gr.Progress()):
        return run_export(name, fmt, quants, progress=lambda f, text: progress(f, desc=text))

    def _push(name, repo, private, fmt, quants, progress=gr.Progress()):
        return run_push(name, repo, private, fmt, quants, progress=lambda f, text: progress(f, desc=text))

    kw = dict(api_visibility="private", concurrency_limit=1)
    panel.export.click(_export, [run, panel.fmt, panel.quants], panel.result, **kw)
    panel.push.click(_push, [run, panel.repo, panel.private, panel.push_fmt, panel.quants], panel.pushed, **kw)
    run.change(lambda _: token_note(), run, panel.token, api_visibility="private", concurrency_limit=None)
