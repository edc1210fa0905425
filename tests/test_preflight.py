"""Preflight: each setting a run cannot train with gets one readable line before any weights load, from the
core function, from ``python -m studio train`` (exit 2, one ``error:`` line each) and from the Train tab."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config, tiny_model, tiny_tokenizer
from studio import cli, methods, preflight, training
from studio.config import ConfigError, MethodSpec, RunConfig

ROOT = Path(__file__).resolve().parent.parent
DATA = str(ROOT / "presets" / "data" / "identity.jsonl")


def make_cfg(model_dir, method: dict | None = None, **train) -> RunConfig:
    return RunConfig.from_dict({"model": {"id": str(model_dir)}, "method": method or {"name": "lora"},
                                "data": {"path": DATA},
                                "train": {"max_steps": 2, "precision": "fp32", "max_seq_len": 128, **train}})


def config_folder(path: Path, config) -> Path:
    """A model folder with only a config and a tokenizer: all the preflight reads."""
    config.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def run_cli(capsys, tmp_path, model_dir, *sets: str) -> tuple[int, list[str]]:
    """``python -m studio train`` on a preset for ``model_dir``; the exit code and the stderr lines."""
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({"model": {"id": str(model_dir)}, "data": {"path": DATA},
                                      "train": {"max_steps": 2, "precision": "fp32", "max_seq_len": 128,
                                                "output_dir": str(tmp_path / "runs")}}))
    args = ["train", str(preset), "--quiet"] + [a for s in sets for a in ("--set", s)]
    code = cli.main(args)
    return code, capsys.readouterr().err.strip().splitlines()


def _mamba(tmp_path) -> Path:
    from transformers import MambaConfig

    return config_folder(tmp_path / "mamba", MambaConfig(hidden_size=64, num_hidden_layers=2, vocab_size=512,
                                                         state_size=4))


def _falcon(tmp_path) -> Path:
    from transformers import FalconConfig

    # multi-query attention (one key/value head), as falcon-7b has
    return config_folder(tmp_path / "falcon", FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                           vocab_size=512, multi_query=True))


# ---- 1. LoRA-family rank ---------------------------------------------------------------------------------------

def test_rank_zero_is_refused_by_the_knob_range(tiny_dirs, tmp_path, capsys):
    code, lines = run_cli(capsys, tmp_path, tiny_dirs["llama"], "method.r=0")
    assert code == 2 and lines == ["error: method.r: 0 is below the minimum 1"]
    assert not (tmp_path / "runs").exists()


def test_rank_above_a_targeted_layer_names_the_layer_and_its_sizes(tiny_dirs):
    small = tiny_config("llama")
    kv = small.num_key_value_heads * small.hidden_size // small.num_attention_heads  # k_proj / v_proj out size
    found = preflight.problems(make_cfg(tiny_dirs["llama"], {"name": "lora", "r": kv + 1, "targets": ["k_proj"]}))
    assert found == [f"method.r: {kv + 1} is more than layer k_proj can take (model.layers.0.self_attn.k_proj: in "
                     f"{small.hidden_size}, out {kv} features); a LoRA rank is at most a layer's smaller size: lower "
                     f"method.r to {kv} or leave k_proj out of method.targets"]
    found = preflight.problems(make_cfg(tiny_dirs["llama"], {"name": "lora", "r": kv + 1, "targets": ["attention"]}))
    assert len(found) == 1 and found[0].startswith(
        f"method.r: {kv + 1} is more than layers k_proj, v_proj can take (smallest: model.layers.0.self_attn.k_proj")
    assert found[0].endswith("or leave them out of method.targets")
    assert preflight.problems(make_cfg(tiny_dirs["llama"], {"name": "lora", "r": kv, "targets": ["attention"]})) == []
    # only the layers targeted count: the query projection is wider
    assert preflight.problems(make_cfg(tiny_dirs["llama"], {"name": "lora", "r": kv + 1, "targets": ["q_proj"]})) == []


def test_adalora_initial_rank_is_checked_too(tiny_dirs):
    width = tiny_config("gpt2").n_embd  # GPT-2's q/k/v projection is width x 3 width; the others width-wide too
    found = preflight.problems(make_cfg(tiny_dirs["gpt2"], {"name": "adalora", "init_r": width + 8, "target_r": 8}))
    assert len(found) == 1 and found[0].startswith(
        f"method.init_r: {width + 8} is more than layers c_attn, attn.c_proj, c_fc, mlp.c_proj can take (smallest: "
        f"transformer.h.0.attn.c_attn: in {width}, out {3 * width} features)")


def test_rank_refusal_reaches_the_cli(tiny_dirs, tmp_path, capsys):
    code, lines = run_cli(capsys, tmp_path, tiny_dirs["llama"], "method.r=200")
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: method.r: 200 is more than layers q_proj, k_proj, v_proj, o_proj can take")
    assert not (tmp_path / "runs").exists(), "a refused run leaves no folder behind"


# ---- 2. targets that match nothing -----------------------------------------------------------------------------

def test_unknown_target_names_what_the_model_has(tiny_dirs, tmp_path, capsys):
    expected = ("method.targets: q_proj not in this model (it has: c_attn, attn.c_proj, c_fc, mlp.c_proj; "
                "or use attention / mlp / all-linear)")
    assert preflight.problems(make_cfg(tiny_dirs["gpt2"], {"name": "lora", "targets": ["q_proj"]})) == [expected]
    code, lines = run_cli(capsys, tmp_path, tiny_dirs["gpt2"], "method.targets=q_proj")
    assert code == 2 and lines == [f"error: {expected}"]


def test_a_group_that_matches_no_layer_lists_the_layers(tmp_path):
    found = preflight.problems(make_cfg(_mamba(tmp_path), {"name": "lora", "targets": ["attention"]}))
    assert found == ["method.targets: attention matches no layer of this model; name some of its layers "
                     "(in_proj, x_proj, dt_proj, out_proj) or use all-linear"]
    assert preflight.problems(make_cfg(tmp_path / "mamba", {"name": "lora", "r": 4, "targets": ["all-linear"]})) == []


def test_every_module_name_knob_is_checked(tiny_dirs):
    found = preflight.problems(make_cfg(tiny_dirs["llama"], {"name": "ia3", "feedforward": ["c_fc"]}))
    assert len(found) == 1 and found[0].startswith("method.feedforward: c_fc not in this model (it has: q_proj")


# ---- 3. learning rate and batch ---------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, line", [
    ("train.learning_rate=0", "train.learning_rate: 0.0 is below the minimum 1e-08"),
    ("train.learning_rate=5", "train.learning_rate: 5.0 is above the maximum 1.0"),
    ("train.micro_batch_size=0", "train.micro_batch_size: 0 is below the minimum 1"),
    ("train.grad_accum=0", "train.grad_accum: 0 is below the minimum 1"),
    ("train.epochs=0", "train.epochs is 0 and train.max_steps is not set: nothing to train"),
])
def test_learning_rate_batch_and_length_of_run(tiny_dirs, tmp_path, capsys, setting, line):
    sets = (setting, "train.max_steps=null") if setting.startswith("train.epochs") else (setting,)
    code, lines = run_cli(capsys, tmp_path, tiny_dirs["llama"], *sets)
    assert code == 2 and lines == [f"error: {line}"]


# ---- 4. sequence length beyond the model's context -------------------------------------------------------------

@pytest.mark.parametrize("family, field", [("llama", "max_position_embeddings"), ("gpt2", "n_positions")])
def test_max_seq_len_beyond_the_context(tiny_dirs, tmp_path, capsys, family, field):
    context = getattr(tiny_config(family), field)
    expected = (f"train.max_seq_len: {context * 2} is beyond the model's context length, {context} tokens "
                f"({field} in its config); set it to {context} or less")
    assert preflight.problems(make_cfg(tiny_dirs[family], max_seq_len=context * 2)) == [expected]
    assert preflight.problems(make_cfg(tiny_dirs[family], max_seq_len=context)) == []
    code, lines = run_cli(capsys, tmp_path, tiny_dirs[family], f"train.max_seq_len={context * 2}")
    assert code == 2 and lines == [f"error: {expected}"]


def test_a_model_without_a_stated_context_has_no_limit(tmp_path):
    assert preflight.context_length(tiny_config("llama")) == (tiny_config("llama").max_position_embeddings,
                                                            "max_position_embeddings")
    folder = _mamba(tmp_path)
    cfg = make_cfg(folder, {"name": "lora", "r": 4, "targets": ["all-linear"]}, max_seq_len=65536)
    assert preflight.problems(cfg) == []


# ---- 5. quantisation without bitsandbytes ----------------------------------------------------------------------

@pytest.fixture
def no_bitsandbytes(monkeypatch):
    """bitsandbytes made unimportable (as on a machine without it); the cached probe is cleared around."""
    preflight.bitsandbytes_problem.cache_clear()
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    yield
    preflight.bitsandbytes_problem.cache_clear()


def test_bitsandbytes_probe_quantises_here():
    preflight.bitsandbytes_problem.cache_clear()
    assert preflight.bitsandbytes_problem("cpu") is None  # bitsandbytes 0.50 quantises 4- and 8-bit on a CPU


def test_qlora_without_bitsandbytes_is_refused(tiny_dirs, tmp_path, capsys, no_bitsandbytes):
    reason = preflight.bitsandbytes_problem("cpu")
    assert reason.startswith("it cannot be imported here (ModuleNotFoundError:")
    expected = (f"model.quantization: nf4 (set by method qlora) needs bitsandbytes, but {reason}; install it "
                "(pip install bitsandbytes) or pick a method without quantisation (lora)")
    assert preflight.problems(make_cfg(tiny_dirs["llama"], {"name": "qlora"})) == [expected]
    code, lines = run_cli(capsys, tmp_path, tiny_dirs["llama"], "method.name=qlora")
    assert code == 2 and lines == [f"error: {expected}"]
    assert not (tmp_path / "runs").exists()


def test_eight_bit_base_and_optimizer_without_bitsandbytes(tiny_dirs, no_bitsandbytes):
    found = preflight.problems(make_cfg(tiny_dirs["llama"], {"name": "lora_8bit"}, optimizer="adamw_8bit"))
    assert [line.split(" needs ")[0] for line in found] == ["model.quantization: 8bit (set by method lora_8bit)",
                                                             "train.optimizer: adamw_8bit"]
    assert found[1].endswith("or use train.optimizer: adamw")


def test_weight_methods_refuse_a_quantised_base_before_loading(tiny_dirs):
    cfg = make_cfg(tiny_dirs["llama"], {"name": "full"})
    cfg.model.quantization = "nf4"
    assert preflight.problems(cfg) == [f"method.name: {methods.quantised_refusal(methods.get('full'))}"]


# ---- 6. methods the model cannot take, models the studio cannot train -------------------------------------------

@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("name", ["prefix", "prompt", "ptuning"])
def test_prompt_methods_pass_on_the_usual_families(tiny_dirs, family, name):
    assert preflight.problems(make_cfg(tiny_dirs[family], {"name": name})) == []


def test_prefix_on_a_multi_query_cache_is_refused_with_the_reason(tmp_path):
    folder = _falcon(tmp_path)
    found = preflight.problems(make_cfg(folder, {"name": "prefix"}))
    assert len(found) == 1
    assert found[0].startswith("method.name: prefix tuning does not fit falcon's attention cache: PEFT sizes the "
                               "prefix for 4 key/value heads of 16 dims, and a trial forward pass (no weights) fails "
                               "(RuntimeError: Sizes of tensors must match")
    assert found[0].endswith("pick LoRA or prompt tuning instead")
    assert preflight.problems(make_cfg(folder, {"name": "prompt"})) == []


def test_the_falcon_refusal_is_what_real_weights_do(tmp_path):
    """Honesty check: with real (tiny, random) weights PEFT's prefix fails on this model the same way."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(_falcon(tmp_path)))
    model = methods.get("prefix").apply(model, MethodSpec("prefix", {"num_virtual_tokens": 4}))
    ids = torch.tensor([[5, 6, 7, 8]])
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        model(input_ids=ids, labels=ids)


def test_methods_that_need_attention_on_a_state_space_model(tmp_path):
    folder = _mamba(tmp_path)
    for name in ("prefix", "prompt"):
        found = preflight.problems(make_cfg(folder, {"name": name}))
        assert len(found) == 1 and found[0].startswith(
            f"method.name: {methods.get(name).title} needs the model's attention heads, and PEFT finds none in "
            "mamba's config"), found


def test_prefix_with_gradient_checkpointing(tiny_dirs, tmp_path, capsys):
    expected = ("train.gradient_checkpointing: prefix tuning cannot run with it (PEFT keeps the prefix in the "
                "attention cache, which checkpointing turns off); set it to false or pick another method")
    cfg = make_cfg(tiny_dirs["llama"], {"name": "prefix"}, gradient_checkpointing=True)
    assert preflight.problems(cfg) == [expected]
    with pytest.raises(ValueError, match="does not work with gradient checkpointing"):  # what PEFT does after loading
        methods.get("prefix").apply(tiny_model("llama"), MethodSpec("prefix"),
                                    methods.Context(gradient_checkpointing=True))
    code, lines = run_cli(capsys, tmp_path, tiny_dirs["llama"], "method.name=prefix",
                          "train.gradient_checkpointing=true")
    assert code == 2 and lines == [f"error: {expected}"]


def test_a_bert_folder_is_not_a_causal_language_model(tmp_path, capsys):
    from transformers import BertConfig

    config = BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        vocab_size=512, architectures=["BertForMaskedLM"])
    folder = config_folder(tmp_path / "bert", config)
    expected = ("model.id: its checkpoint is BertForMaskedLM, which does not predict the next token; "
                f"{preflight.CAUSAL_ONLY}")
    assert preflight.problems(make_cfg(folder)) == [expected]
    code, lines = run_cli(capsys, tmp_path, folder)
    assert code == 2 and lines == [f"error: {expected}"]
    config.architectures = None  # a bare config: the model type says it
    assert preflight.causal_lm_problem(config).startswith("bert is an encoder (it attends both ways")
    config.is_decoder = True
    assert preflight.causal_lm_problem(config) is None


def test_an_encoder_decoder_folder_is_refused(tmp_path):
    from transformers import T5Config

    folder = config_folder(tmp_path / "t5", T5Config(d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16,
                                                     vocab_size=512, architectures=["T5ForConditionalGeneration"]))
    assert preflight.problems(make_cfg(folder)) == [
        f"model.id: t5 is an encoder-decoder model (T5ForConditionalGeneration); {preflight.CAUSAL_ONLY}"]


# ---- knobs that do not go together, and every problem at once ---------------------------------------------------

def test_knob_combinations_are_config_problems():
    assert methods.check_spec(MethodSpec("adalora", {"init_r": 8, "target_r": 16})) == [
        "method.target_r: 16 is above init_r 8; AdaLoRA only prunes ranks"]
    assert methods.check_spec(MethodSpec("prompt", {"init": "text"})) == [
        "method.init_text: empty, but init is text; type the text the prompt starts from, or pick init vocab"]


def test_every_problem_at_once(tiny_dirs, no_bitsandbytes):
    context = tiny_config("llama").max_position_embeddings
    found = preflight.problems(make_cfg(tiny_dirs["llama"], {"name": "qlora", "r": 512}, max_seq_len=context + 1))
    assert [line.split(":")[0] for line in found] == ["model.quantization", "train.max_seq_len", "method.r"]


# ---- where the problems show -----------------------------------------------------------------------------------

def test_training_job_fails_fast_without_a_run_folder(tiny_dirs, tmp_path):
    job = training.TrainingJob(make_cfg(tiny_dirs["llama"], max_seq_len=100_000, output_dir=str(tmp_path / "runs")))
    with pytest.raises(ConfigError) as err:
        job.start()
    assert err.value.problems[0].startswith("train.max_seq_len: 100000 is beyond the model's context length")
    assert job.state == "queued" and job.run_dir is None and not (tmp_path / "runs").exists()


def test_start_button_shows_the_problems_instead_of_starting(tiny_dirs, tmp_path):
    from studio.ui import state, train_tab

    state.configure(runs_root=tmp_path / "runs")
    before = state.get().job
    cfg = make_cfg(tiny_dirs["gpt2"], {"name": "lora", "targets": ["q_proj"]}, max_seq_len=5000)
    message = train_tab.start_training(cfg)
    lines = message.splitlines()
    assert lines[0] == "**Cannot start:**"
    assert lines[1].startswith("- train.max_seq_len: 5000 is beyond the model's context length")
    assert lines[2].startswith("- method.targets: q_proj not in this model (it has: c_attn")
    assert state.get().job is before and not (tmp_path / "runs").exists()


def test_method_tab_verdict_shows_the_problems(tiny_dirs):
    from studio.ui import method_tab

    small = tiny_config("llama")
    kv = small.num_key_value_heads * small.hidden_size // small.num_attention_heads
    cfg = make_cfg(tiny_dirs["llama"], {"name": "lora", "r": kv * 2})
    trainable, _, verdict = method_tab.estimate_view(cfg)
    assert "trainable" in trainable
    assert verdict.startswith(f"**Cannot train with these settings:**\n- method.r: {kv * 2} is more than layers "
                              "k_proj, v_proj can take")
