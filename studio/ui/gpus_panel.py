"""'Run on more GPUs' (Train tab): the accelerate config and launch command for a strategy and GPU count,
and the per-GPU memory estimate, so a run built here can be repeated on a bigger machine."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio import distributed, hardware, memory, models
from studio import fit as advisor
from studio.config import ConfigError, DistributedSpec, RunConfig
from studio.ui.form import Form, field_widget
from studio.ui.model_tab import HERE

__all__ = ["GpusPanel", "build_gpus_panel", "launch_view"]


@dataclass
class GpusPanel:
    gpus: gr.Slider
    show: gr.Button
    per_gpu: gr.Markdown
    config_yaml: gr.Code
    command: gr.Code


def _per_gpu_md(cfg: RunConfig, gpus: int, gpu: str) -> str:
    arch = models.read_arch(cfg.model)
    device = hardware.find(None if gpu in (None, "", HERE) else gpu)
    if device.kind == "cpu":
        device = hardware.CATALOG[next(iter(n for n in hardware.CATALOG if "A100 80" in n), list(hardware.CATALOG)[0])]
    breakdown = memory.estimate(arch, cfg, world_size=gpus, device="cuda")
    fit = advisor.fit(breakdown, device, arch, cfg, world_size=gpus)
    return (f"**Per GPU with {cfg.train.distributed.strategy} on {gpus}× {device.name}:** "
            f"{breakdown.peak_bytes / 1e9:.2f} GB peak · {fit.summary}")


def launch_view(cfg: RunConfig, gpus: int, gpu: str = HERE) -> tuple[str, str, str]:
    """(per-GPU estimate, accelerate config YAML, shell commands) for ``cfg`` on ``gpus`` GPUs."""
    gpus = int(gpus)
    try:
        plan = distributed.plan_launch(cfg, gpus)
        estimate = _per_gpu_md(cfg, gpus, gpu)
    except ConfigError as err:
        return "**Cannot plan this launch:** " + "; ".join(err.problems), "", ""
    run_yaml = plan.run_config.to_yaml() if plan.run_config else cfg.to_yaml()
    commands = (f"# 1. save the run settings (the Runs tab's YAML) and the accelerate config:\n"
                f"mkdir -p {plan.config_path.parent}\n"
                f"cat > {plan.config_path.parent / 'run.yaml'} <<'YAML'\n{run_yaml}YAML\n"
                f"cat > {plan.config_path} <<'YAML'\n{plan.config_yaml}YAML\n"
                f"# 2. launch on {gpus} GPU(s):\n{plan.command_line}\n")
    notes = "".join(f"\n- {n}" for n in plan.notes)
    return estimate + notes, plan.config_yaml, commands


def build_gpus_panel(form: Form) -> GpusPanel:
    """The accordion; its strategy settings go into ``form`` (they are part of the RunConfig)."""
    with gr.Accordion("Run on more GPUs", open=False, elem_id="gpus-panel"):
        with gr.Row():
            form.add("train.distributed.strategy", field_widget(DistributedSpec, "strategy", elem_id="dist-strategy"))
            form.add("train.distributed.offload", field_widget(DistributedSpec, "offload"))
            form.add("train.distributed.mixed_precision", field_widget(DistributedSpec, "mixed_precision"))
        with gr.Row():
            gpus = gr.Slider(1, 64, value=8, step=1, precision=0, label="GPUs", elem_id="dist-gpus")
            show = gr.Button("Show the launch", elem_id="dist-show")
        per_gpu = gr.Markdown(elem_id="dist-estimate")
        config_yaml = gr.Code(label="accelerate config", language="yaml", elem_id="dist-config")
        command = gr.Code(label="commands", language="shell", elem_id="dist-command")
    return GpusPanel(gpus, show, per_gpu, config_yaml, command)


def wire_gpus_panel(panel: GpusPanel, form: Form, gpu: gr.Dropdown) -> None:
    def _show(*values):
        try:
            cfg = form.to_config(*values[:-2])
        except ConfigError as err:
            return "**Check the settings:** " + "; ".join(err.problems), "", ""
        return launch_view(cfg, values[-2], values[-1])

    inputs = form.components + [panel.gpus, gpu]
    outputs = [panel.per_gpu, panel.config_yaml, panel.command]
    panel.show.click(_show, inputs, outputs, concurrency_limit=None, api_name="launch_plan")
    panel.gpus.change(_show, inputs, outputs, concurrency_limit=None, show_progress="hidden",
                      trigger_mode="always_last", api_visibility="private")
