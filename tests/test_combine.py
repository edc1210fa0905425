"""Combining finished LoRA runs into a new run: the result loads like any run, its logits equal the
weighted sum of the runs' updates (cat, checked by hand) and PEFT's own combination (ties), and every bad
setting is one line."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from studio import cli, combine, methods, runs
from studio.config import ConfigError
from tests.runfolders import make_run

IDS = torch.tensor([[5, 17, 42, 9, 77, 3, 120, 64]])


@pytest.fixture(scope="module")
def two_runs(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("combine-runs")
    a = make_run(root, tiny_dirs["llama"], "task-a", seed=1)
    b = make_run(root, tiny_dirs["llama"], "task-b", seed=2, knobs={"r": 4})
    return root, a, b


def _base(tiny_dirs):
    return AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _delta(tiny_dirs, run) -> dict[str, torch.Tensor]:
    """The run's weight update, read off its merged model."""
    base = _base(tiny_dirs).state_dict()
    merged = methods.merge(methods.load_result(_base(tiny_dirs), run / "adapter")).state_dict()
    return {k: merged[k] - base[k] for k in base}


def test_cat_equals_weighted_sum_of_updates(two_runs, tiny_dirs):
    root, a, b = two_runs
    out = combine.combine_runs([a, b], "0.6,0.4", "cat", "ab-cat")
    assert out.parent == root and (out / "adapter" / methods.RESULT_FILE).is_file()
    run = runs.load_run(out)
    assert run.status == "done" and run.config.method.name == "lora" and run.config.method.knobs["r"] == 12
    assert json.loads((out / combine.COMBINE_FILE).read_text())["weights"] == [0.6, 0.4]
    tuned = methods.load_result(_base(tiny_dirs), out / "adapter")
    da, db = _delta(tiny_dirs, a), _delta(tiny_dirs, b)
    by_hand = _base(tiny_dirs)
    by_hand.load_state_dict({k: v + 0.6 * da[k] + 0.4 * db[k] for k, v in by_hand.state_dict().items()})
    assert torch.allclose(_logits(tuned), _logits(by_hand), atol=1e-4)
    assert not torch.allclose(_logits(tuned), _logits(_base(tiny_dirs)), atol=1e-3)  # it does change the model
    assert cli.main(["chat", str(out), "--prompt", "hi", "--max-new-tokens", "2"]) == 0  # chats like any run


def test_ties_equals_peft_combination_by_hand(tiny_dirs, tmp_path):
    from peft import PeftModel

    a = make_run(tmp_path, tiny_dirs["llama"], "a", seed=3)
    b = make_run(tmp_path, tiny_dirs["llama"], "b", seed=4)
    out = combine.combine_runs([a, b], [0.7, 0.3], "ties", "ab", density=0.4)
    tuned = methods.load_result(_base(tiny_dirs), out / "adapter")
    ref = PeftModel.from_pretrained(_base(tiny_dirs), str(a / "adapter"), adapter_name="x")
    ref.load_adapter(str(b / "adapter"), adapter_name="y")
    ref.add_weighted_adapter(["x", "y"], [0.7, 0.3], "m", combination_type="ties", density=0.4)
    ref.set_adapter("m")
    assert torch.allclose(_logits(tuned), _logits(ref.eval()), atol=1e-5)


def test_cli_combines_and_refuses_in_one_line(two_runs, tiny_dirs, capsys):
    root, a, b = two_runs
    assert cli.main(["combine", str(a), str(b), "--method", "linear", "--weights", "0.5,0.5", "--out", "lin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # linear needs equal ranks: PEFT's refusal, one line
    assert len(err) == 1 and "same r value" in err[0]
    assert not (a.parent / "lin").exists()
    c = make_run(root, tiny_dirs["llama"], "task-c", seed=5)
    assert cli.main(["combine", str(a), str(c), "--method", "svd", "--out", "svd"]) == 0
    printed = capsys.readouterr().out.strip()
    assert runs.load_run(printed).config.method.knobs["r"] == 8
    assert cli.main(["combine", str(a), str(b), "--weights", "0.6,0.3,0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 weights for 2 runs" in err[0]


@pytest.mark.parametrize("weights, line", [("1,x", "not a comma-separated list"), ("0.5,-0.5", "sum to 0"),
                                           ("0.2", "1 weights for 2 runs")])
def test_bad_weights_are_one_line(weights, line):
    with pytest.raises(ConfigError) as err:
        combine.parse_weights(weights, 2)
    assert len(err.value.problems) == 1 and line in err.value.problems[0]


def test_runs_that_cannot_combine(two_runs, tiny_dirs, tmp_path):
    _, a, _ = two_runs
    other_base = make_run(tmp_path, tiny_dirs["qwen2"], "qwen")
    ia3 = make_run(tmp_path, tiny_dirs["llama"], "ia3", method="ia3")
    adalora = make_run(tmp_path, tiny_dirs["llama"], "ada", method="adalora")
    cases = [([a, other_base], "same base"), ([a, ia3], "not a LoRA adapter"), ([a, adalora], "not a LoRA adapter")]
    for paths, line in cases:
        with pytest.raises(ConfigError) as err:
            combine.check_runs(paths)
        assert len(err.value.problems) == 1 and line in err.value.problems[0], err.value.problems
    with pytest.raises(ConfigError, match="is not one of"):
        combine.combine_runs([a, a], method="average")
    runs.write_state(ia3, status="training", pid=None)
    with pytest.raises(ConfigError, match="not done"):
        combine.check_runs([a, ia3])


def test_runs_tab_panel_combines_and_says_why_not(two_runs, tiny_dirs):
    from studio.ui import combine_panel

    root, a, b = two_runs
    said = combine_panel.combine_runs([a.name, b.name], "cat", "1,1", 0.5, "from-ui", str(root))
    assert "into **from-ui**" in said and runs.load_run(root / "from-ui").status == "done"
    said = combine_panel.combine_runs([a.name], "ties", "", 0.5, "", str(root))
    assert said == "**Cannot combine:** combine: name at least two runs"
