"""Method tab: the method picker, its knobs generated from the registry, the training shape, and beside
them the trainable-parameter count, the VRAM breakdown and the fit verdict, redrawn on every move."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import plotly.graph_objects as go

from studio import fit as advisor
from studio import hardware, memory, meta_model, methods, models, preflight, targets
from studio.config import ConfigError, MethodSpec, RunConfig, TrainSpec
from studio.ui import paths, plots
from studio.ui.form import LAYERS, Form, field_widget, layer_widgets, setting_widget
from studio.ui.model_tab import HERE

__all__ = ["MethodTab", "build_method_tab", "method_groups", "estimate_view", "target_choices", "layer_names",
           "module_choices", "trainable_text"]

# Training settings that change the memory picture sit beside the estimate, not on the Train tab.
SHAPE_FIELDS = ("micro_batch_size", "grad_accum", "max_seq_len", "gradient_checkpointing", "optimizer", "precision")


@dataclass
class MethodTab:
    method: gr.Dropdown
    groups: list  # one gr.Group per registered method, in registry order
    model_widgets: list  # (widget, 'layers' or 'modules'): knob widgets whose choices follow the model
    trainable: gr.Markdown
    plot: gr.Plot
    verdict: gr.Markdown


def method_groups(name: str) -> list:
    """Visibility updates: only the chosen method's knobs show."""
    return [gr.update(visible=m.name == name) for m in methods.all_methods()]


def _arch(model_id: str):
    return models.read_arch(models.ModelSpec(id=paths.check_model(model_id) or "embedded"))


def layer_names(model_id: str) -> list[str]:
    """The model's linear layer names, from a meta-device copy built from its config (cached per model)."""
    try:
        return targets.for_arch(_arch(model_id))["all-linear"]
    except ConfigError:
        return []


def target_choices(model_id: str) -> list[str]:
    """Groups, then the layer names the model offers."""
    return list(targets.GROUPS) + layer_names(model_id)


def module_choices(model_id: str) -> list[str]:
    """Short names of the model's modules with parameters (lm_head, norm, mlp...), for freeze's modules."""
    try:
        model = meta_model.for_arch(_arch(model_id))
    except ConfigError:
        return []
    return targets.module_names(model) if model is not None else []


def _choices(kind: str, model_id: str) -> list[str]:
    return layer_names(model_id) if kind == "layers" else module_choices(model_id)


def trainable_text(cfg: RunConfig) -> str:
    """'N trainable parameters (x% of M)' for the config's method on its model (the estimate's counts)."""
    arch, _ = memory.resolve_arch(cfg.model)
    method = methods.get(cfg.method.name)
    bd = memory.estimate(arch, cfg)
    n, total = bd.trainable_params, bd.total_params
    # methods that add weights (LoRA...) grow the model; weight methods (full, bitfit) train a part of it
    whole = total if method.family == "weights" else total + n
    return f"**{n:,}** trainable parameters ({100 * n / max(whole, 1):.3g}% of {whole:,})"


def _device(hardware, gpu: str | None):
    """The catalog device picked, or the first device here."""
    return hardware.find(None if gpu in (None, "", HERE) else gpu)


def _fit_md(fit) -> str:
    """The verdict line, the first change that would make it fit, and the largest batch / length."""
    lines = [f"**{fit.verdict.upper()}**: {fit.summary}"]
    if fit.changes:
        lines.append(f"- would fit: {fit.changes[0].text} ({fit.changes[0].peak_bytes / 1e9:.1f} GB)")
    if fit.max_micro_batch:
        lines.append(f"- largest micro-batch that fits: {fit.max_micro_batch}; longest max_seq_len: {fit.max_seq_len}")
    if getattr(fit.device, "note", ""):
        lines.append(f"- {fit.device.note}")
    return "\n".join(lines)


def estimate_view(cfg: RunConfig, gpu: str = HERE) -> tuple[str, go.Figure, str]:
    """Trainable count, VRAM breakdown figure and fit verdict for ``cfg`` (pure and fast)."""
    try:
        trainable = trainable_text(cfg)
        arch, source = memory.resolve_arch(cfg.model)
    except ConfigError as err:
        return "**Cannot read the model:** " + "; ".join(err.problems), plots.empty("VRAM estimate"), ""
    try:
        device = _device(hardware, gpu)
        breakdown = memory.estimate(arch, cfg, device="cpu" if device.kind == "cpu" else "cuda")
        fit = advisor.fit(breakdown, device, arch, cfg)
    except ConfigError as err:
        return trainable, plots.empty("VRAM estimate"), "**Cannot estimate:** " + "; ".join(err.problems)
    parts = {name: getattr(breakdown, name) for name in memory.PARTS}
    title = f"{'RAM' if device.kind == 'cpu' else 'VRAM'} estimate: {breakdown.peak_bytes / 1e9:.2f} GB peak"
    note = "" if source == "config" else f"\n\n_Figures from {source}._"
    return trainable, plots.memory_bar(parts, device.total_bytes, title=title), \
        _preflight_md(cfg, gpu) + _fit_md(fit) + note


def _preflight_md(cfg: RunConfig, gpu: str | None) -> str:
    """What Start would refuse, above the verdict (this machine's checks only when planning for it)."""
    found = preflight.problems(cfg, machine=gpu in (None, "", HERE))
    if not found:
        return ""
    return "**Cannot train with these settings:**\n" + "\n".join(f"- {p}" for p in found) + "\n\n"


def estimate_event(form: Form):
    """The event function: widget values (+ GPU picked) -> estimate view, problems shown as text."""
    def _run(*values):
        try:
            cfg = form.to_config(*values[:-1])
        except ConfigError as err:
            return "", plots.empty("VRAM estimate"), "**Check the settings:**\n" + "\n".join(
                f"- {p}" for p in err.problems)
        return estimate_view(cfg, values[-1])
    return _run


def _knob_widgets(form: Form, method: str, knob, model_id: str) -> list:
    """Add one knob's widget(s) to the form; return those whose choices follow the model, with their kind."""
    key, elem_id = f"knob:{method}:{knob.name}", f"knob-{method}-{knob.name}"
    if knob.picks == "layers":  # groups first, then the model's own layer names
        grouped, layers = layer_widgets(knob, list(targets.GROUPS), layer_names(model_id), elem_id)
        form.add(key, grouped)
        form.add(f"{key}:{LAYERS}", layers)
        return [(layers, "layers")]
    widget = form.add(key, setting_widget(knob, None, _choices(knob.picks, model_id) if knob.picks else None,
                                       elem_id=elem_id))
    return [(widget, knob.picks)] if knob.picks else []


def build_method_tab(form: Form, model_id: str) -> MethodTab:
    """Method dropdown, generated knob widgets and training shape (left); estimate (right)."""
    all_methods = methods.all_methods()
    choices = [(f"{m.title}: {m.summary}", m.name) for m in all_methods]
    first = MethodSpec().name  # the config's default method: the UI names no method of its own
    groups, model_widgets = [], []
    with gr.Row():
        with gr.Column(scale=3):
            method = form.add("method.name", gr.Dropdown(choices, value=first, label="method", elem_id="method"))
            for m in all_methods:
                with gr.Group(visible=m.name == first) as group:
                    for knob in m.knobs:
                        model_widgets += _knob_widgets(form, m.name, knob, model_id)
                groups.append(group)
            gr.Markdown("### Training shape (changes memory)")
            with gr.Row():
                for name in SHAPE_FIELDS[:3]:
                    form.add(f"train.{name}", field_widget(TrainSpec, name, elem_id=f"train-{name}"))
            with gr.Row():
                for name in SHAPE_FIELDS[3:]:
                    form.add(f"train.{name}", field_widget(TrainSpec, name, elem_id=f"train-{name}"))
        with gr.Column(scale=2):
            trainable = gr.Markdown(elem_id="trainable")
            plot = gr.Plot(plots.empty("VRAM estimate"), elem_id="estimate-plot", show_label=False)
            verdict = gr.Markdown(elem_id="estimate-text")
    return MethodTab(method, groups, model_widgets, trainable, plot, verdict)


def _follow_model(tab: MethodTab):
    """Event function: a new model's layer / module names as choices, keeping the picks it also has."""
    def _update(mid, *values):
        out = []
        for (_, kind), value in zip(tab.model_widgets, values):
            names = _choices(kind, mid)
            out.append(gr.update(choices=names, value=[v for v in value or [] if v in names]))
        return out
    return _update


def wire_method_tab(tab: MethodTab, form: Form, model_id: gr.Dropdown, gpu: gr.Dropdown, demo: gr.Blocks) -> None:
    """Show the picked method's knobs; redraw the estimate on every setting move (cheap: < 10 ms)."""
    tab.method.change(method_groups, tab.method, tab.groups, show_progress="hidden", concurrency_limit=None,
                      api_visibility="private")
    if tab.model_widgets:
        widgets = [w for w, _ in tab.model_widgets]
        model_id.change(_follow_model(tab), [model_id] + widgets, widgets, show_progress="hidden",
                        concurrency_limit=None, api_visibility="private")
    outputs = [tab.trainable, tab.plot, tab.verdict]
    inputs = form.components + [gpu]
    fn = estimate_event(form)
    for component in inputs:
        component.change(fn, inputs, outputs, show_progress="hidden", concurrency_limit=None,
                         trigger_mode="always_last", api_visibility="private")
    demo.load(fn, inputs, outputs, show_progress="hidden", concurrency_limit=None, api_name="estimate")
