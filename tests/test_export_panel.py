"""The Runs tab's export and push panels, through their handlers (no browser)."""

from __future__ import annotations

import gradio as gr

from studio.ui import export_panel, runs_tab
from tests.runfolders import make_run


def test_export_writes_beside_the_runs_folder_with_sizes(tmp_path, tiny_dirs):
    runs = tmp_path / "runs"
    make_run(runs, tiny_dirs["llama"], "r1")
    seen = []
    md = export_panel.run_export("r1", "merged", None, root=str(runs), progress=lambda f, t: seen.append(f))
    out = tmp_path / "exports" / "r1-merged"
    assert md.startswith(f"**Exported** to `{out}`") and (out / "model.safetensors").is_file()
    size = (out / "model.safetensors").stat().st_size / 2**20
    assert f"| model.safetensors | {size:.1f} MB |" in md
    # a second export never overwrites the first
    assert export_panel.export_folder("r1", "merged", str(runs)) == tmp_path / "exports" / "r1-merged-2"


def test_export_refusal_and_no_pick_are_one_line(tmp_path, tiny_dirs):
    runs = tmp_path / "runs"
    make_run(runs, tiny_dirs["llama"], "p", method="prompt")
    md = export_panel.run_export("p", "gguf", ["q4_k_m"], root=str(runs))
    assert md.startswith("**Cannot export:** prompt: cannot become a GGUF") and "\n" not in md
    assert export_panel.run_export(None, "gguf", ["f16"]) == "Pick a run first."
    # a name is a folder in the runs folder: a path elsewhere is not followed
    assert "not a run folder" in export_panel.run_export("../../etc", "adapter", None, root=str(runs))


def test_push_without_token_says_how(tmp_path, tiny_dirs, monkeypatch):
    runs = tmp_path / "runs"
    make_run(runs, tiny_dirs["llama"], "r1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no saved login either
    assert "No hub token" in export_panel.token_note()
    md = export_panel.run_push("r1", "me/r1", True, "adapter", None, root=str(runs))
    assert md.startswith("**Not pushed:** no hub token")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    note = export_panel.token_note()
    assert "is found" in note and "hf_secret_value_123" not in note


def test_runs_tab_carries_the_panels():
    with gr.Blocks():
        tab = runs_tab.build_runs_tab()
    assert isinstance(tab.export, export_panel.ExportPanel)
    assert tab.export.fmt.value == "gguf" and "q4_k_m" in [c[0] for c in tab.export.quants.choices]
