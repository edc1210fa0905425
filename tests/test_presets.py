"""Every preset for the embedded model trains through ``python -m studio train`` (shortened to a few steps;
tests/test_quickstart.py runs the quickstart whole). Presets for models that need a download and a GPU
(the 70B plan) are checked by the estimator in tests/test_memory.py instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio import cli, runs
from studio.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = sorted(p.name for p in (ROOT / "presets").glob("*.yaml") if RunConfig.load(p).model.id == "embedded")

pytestmark = pytest.mark.slow


def test_the_embedded_presets_are_found():
    assert {"quickstart.yaml", "dora-identity.yaml", "qlora-identity.yaml", "ia3-identity.yaml",
            "prefix-identity.yaml"} <= set(EMBEDDED)


# the GRPO demo's batch must hold whole groups of answers (micro-batch 1 cannot): tests/test_grpo_demo.py runs it
@pytest.mark.parametrize("preset", [p for p in EMBEDDED if p not in ("quickstart.yaml", "grpo-arithmetic.yaml")])
def test_preset_trains_to_the_end(preset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # presets name their data relative to the project
    # two short steps: the preset's own settings otherwise (QLoRA's 4-bit layers take minutes a step on a CPU)
    code = cli.main(["train", f"presets/{preset}", "--output", str(tmp_path), "--quiet", "--set", "train.max_steps=2",
                     "--set", "train.micro_batch_size=1", "--set", "train.max_seq_len=64"])
    out, err = capsys.readouterr()
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    state = runs.read_state(run_dir)
    assert state["status"] == "done" and state["step"] == 2 and state["adapter_bytes"] > 0
    assert RunConfig.load(run_dir / "config.yaml").method.name == RunConfig.load(ROOT / "presets" / preset).method.name
