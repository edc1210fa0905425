"""The quickstart, end to end on the embedded model: train the preset headless, then ask both models who they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_quickstart_teaches_the_model_its_new_name(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "studio", "train", "presets/quickstart.yaml", "--output",
                          str(tmp_path), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    seconds = time.perf_counter() - started
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = Path(out.stdout.strip().splitlines()[-1])  # the run folder is the last line
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "done" and state["step"] == state["total_steps"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    print(f"quickstart: {seconds:.0f} s wall, {state['train_seconds']:.0f} s training, "
          f"final loss {state['final_loss']:.3f}")

    from studio import chat

    tuned = "".join(chat.answer_once(str(run_dir), "Who are you?", max_new_tokens=40))
    base = "".join(chat.answer_once(str(run_dir), "Who are you?", base=True, max_new_tokens=40))
    print(f"base:  {base!r}\ntuned: {tuned!r}")
    assert "Quill" in tuned
    assert "Quill" not in base and tuned.strip() != base.strip()
