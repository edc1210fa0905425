"""Model tab: which model, how it loads, its architecture card, and the hardware here or planned."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio import hardware
from studio import memory, models
from studio.config import ConfigError, ModelSpec
from studio.ui import paths
from studio.ui.form import Form, field_widget

__all__ = ["ModelTab", "build_model_tab", "arch_card", "hardware_card", "gpu_choices", "HERE"]

HERE = "this machine"


@dataclass
class ModelTab:
    model_id: gr.Dropdown
    dtype: gr.Dropdown
    quantization: gr.Dropdown
    double_quant: gr.Checkbox
    trust_remote_code: gr.Checkbox
    card: gr.Markdown
    hardware: gr.Markdown
    gpu: gr.Dropdown


def _fmt_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def arch_card(model_id: str, trust_remote_code: bool = False) -> str:
    """Markdown card of the architecture, read from the model's config alone (no weights load).

    A typed folder outside the allowed ones is refused before anything reads it (studio.ui.paths). A
    folder whose config reads but that has no safetensors weights gets one line under the card.
    """
    spec = ModelSpec(id=(model_id or "embedded").strip(), trust_remote_code=bool(trust_remote_code))
    try:
        paths.check_model(spec.id)
        arch, source = memory.resolve_arch(spec)
        no_weights = models.missing_weights(spec) if source == "config" else None
    except ConfigError as err:
        return "**Cannot read this model:** " + "; ".join(err.problems)
    rows = [
        ("type", arch.model_type), ("parameters", _fmt_count(memory.parameters(arch))), ("layers", arch.num_layers),
        ("hidden size", arch.hidden_size), ("attention heads", f"{arch.num_heads} ({arch.num_kv_heads} key/value)"),
        ("MLP size", arch.intermediate_size), ("vocabulary", f"{arch.vocab_size:,}"),
        ("context length", f"{arch.max_position:,}"), ("tied embeddings", "yes" if arch.tied_embeddings else "no"),
    ] + ([("experts", f"{arch.num_experts} routed, top-{arch.experts_per_token}")] if arch.num_experts else [])
    card = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    note = "" if source == "config" else f"\n\n_Figures from {source}._"
    return card + note + (f"\n\n**No weights:** {no_weights}" if no_weights else "")


def hardware_card() -> str:
    """What is here: GPUs with total/free memory, or the CPU and RAM."""
    lines = []
    for d in hardware.detect():
        free = f", {d.free_bytes / 1e9:.1f} GB free" if d.free_bytes is not None else ""
        driver = f", driver {d.driver}" if d.driver else ""
        note = f"  \n  _{d.note}_" if d.note else ""
        lines.append(f"- **{d.name}**: {d.total_bytes / 1e9:.1f} GB{free}{driver}{note}")
    return "\n".join(lines)


def gpu_choices() -> list[str]:
    """The planning choices: this machine, then the catalog's devices."""
    return [HERE] + list(hardware.CATALOG)


def build_model_tab(form: Form, default_model: str) -> ModelTab:
    """The Model tab's widgets; the loading settings are registered in ``form``."""
    choices = ["embedded"] + ([default_model] if default_model != "embedded" else [])
    with gr.Row():
        with gr.Column(scale=3):
            model_id = form.add("model.id", gr.Dropdown(
                choices, value=default_model, allow_custom_value=True, label="model",
                info="'embedded' (SmolLM2-135M-Instruct, shipped), a local folder, a hub id or a .gguf file",
                elem_id="model-id"))
            with gr.Row():
                dtype = form.add("model.dtype", field_widget(ModelSpec, "dtype", elem_id="model-dtype"))
                quant = form.add("model.quantization", field_widget(ModelSpec, "quantization", elem_id="model-quant"))
            with gr.Row():
                dq = form.add("model.double_quant", field_widget(ModelSpec, "double_quant"))
                trust = form.add("model.trust_remote_code", field_widget(ModelSpec, "trust_remote_code"))
            form.add("model.attn_implementation", field_widget(ModelSpec, "attn_implementation"))
        with gr.Column(scale=2):
            gr.Markdown("### Architecture")
            card = gr.Markdown(arch_card(default_model), elem_id="arch-card")
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Hardware here")
            hardware = gr.Markdown(hardware_card(), elem_id="hardware-card")
        with gr.Column():
            gpu = gr.Dropdown(gpu_choices(), value=HERE, label="plan for GPU",
                              info="check the fit on another GPU from the catalog", elem_id="gpu-picker")
    return ModelTab(model_id, dtype, quant, dq, trust, card, hardware, gpu)


def wire_model_tab(tab: ModelTab) -> None:
    """Redraw the architecture card when the model changes."""
    for trigger in (tab.model_id.change, tab.trust_remote_code.change):
        trigger(arch_card, [tab.model_id, tab.trust_remote_code], tab.card, show_progress="hidden",
                concurrency_limit=None, api_visibility="private")
