"""The shared method matrix: every registered method on tiny Llama- and GPT-2-shaped models.

For each method: the declared trainable count equals the real one, a few steps lower the loss, the
saved result loads onto a fresh base with identical logits, and merging works or is refused.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_config, tiny_model, tiny_tokenizer

from studio import methods
from studio.config import ConfigError, MethodSpec, ModelSpec
from studio.methods import Context, MergeRefused
from studio.models import ArchSpec

ALL = methods.names()
FAMILIES = ("llama", "gpt2")
# knobs that make a method usable on both tiny families (Llama has no biases, so BitFit adds its norms)
SPECS = {"bitfit": {"norms": True}, "prefix": {"num_virtual_tokens": 4}, "prompt": {"num_virtual_tokens": 4},
         "ptuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 32}, "adapter": {"size": 16},
         "lora_8bit": {"gradient_checkpointing": False}}  # int8 matmuls are slow on CPU; checkpointing doubles them
STEPS = 6
SPECS["waveft"] = {"n_frequency": 500}  # at most in x out of the tiny models' smallest layer (64 x 32)
# PEFT tuners that take torch.nn.Linear only: on GPT-2 (Conv1D layers) they refuse in one line instead
LINEAR_ONLY = {"loha", "lokr", "miss", "delora", "glora", "peanut", "lily", "oft", "boft", "hra", "road", "psoft",
               "osf", "c3a", "supertuning"}
# listed modules by name or name end; they overlap the top block and (GPT-2, tied) the head on purpose
LISTED = {"llama": ["embed_tokens", "layers.0.self_attn.q_proj", "norm", "mlp"],
          "gpt2": ["wte", "h.0.attn.c_attn", "ln_f", "mlp"]}


def _runs_on(names: list[str], families) -> list[tuple[str, str]]:
    """(method, family) pairs where the method applies: Linear-only tuners leave GPT-2 out (tested apart)."""
    return [(n, f) for n in names for f in families if not (f == "gpt2" and n in LINEAR_ONLY)]


def _family(name: str) -> str:
    return "llama" if name in LINEAR_ONLY else "gpt2"


def _spec(name: str, **knobs) -> MethodSpec:
    return MethodSpec(name, {**SPECS.get(name, {}), **knobs})


def _base(name: str, family: str, dirs, spec: MethodSpec | None = None):
    """A fresh base for ``name``: quantised methods load the tiny folder through model_spec_for."""
    method = methods.get(name)
    if method.quantized is None:
        return tiny_model(family)
    from studio import models

    model_spec = methods.model_spec_for(ModelSpec(id=str(dirs[family]), dtype="fp32"), spec or _spec(name))
    return models.load(model_spec)[0].eval()


def _applied(name: str, family: str, dirs, spec: MethodSpec | None = None):
    spec = spec or _spec(name)
    ctx = Context(tokenizer=tiny_tokenizer(), total_steps=STEPS)
    return methods.get(name).apply(_base(name, family, dirs, spec), spec, ctx), spec


def _batch(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(8, 100, (2, 16), generator=g)


def _train(model, method, steps: int = STEPS) -> list[float]:
    torch.manual_seed(0)
    ids = _batch()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=max(method.learning_rate, 1e-3))
    model.train()
    losses = []
    for step in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        method.on_step(model, step)  # AdaLoRA's rank reallocation; a no-op for the others
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def _eval_loss(model) -> float:
    # with gradients on: bitsandbytes repacks 4-bit weights for CPU inference on a no-grad forward, and
    # cannot train after that; eval mode alone already turns dropout and sampled noise off
    model.eval()
    return model(input_ids=_batch(), labels=_batch()).loss.item()


@torch.no_grad()
def _logits(model) -> torch.Tensor:
    model.eval()
    return model(input_ids=_batch(1)).logits.float()


@pytest.mark.parametrize("name,family", _runs_on(ALL + ["freeze+modules"], ("llama", "gpt2", "qwen2")))
def test_declared_trainable_equals_real(name, family, tiny_dirs):
    spec = MethodSpec("freeze", {"modules": LISTED.get(family, ["lm_head", "mlp"])}) if name == "freeze+modules" else None
    name = spec.name if spec else name
    model, spec = _applied(name, family, tiny_dirs, spec)
    arch = ArchSpec.from_config(tiny_model(family).config)
    assert methods.get(name).trainable(arch, spec) == methods.count_trainable(model) > 0


@pytest.mark.parametrize("name,family", _runs_on(ALL + ["freeze+modules"], FAMILIES))
def test_train_save_load_round_trip(name, family, tiny_dirs, tmp_path):
    spec = MethodSpec("freeze", {"top_blocks": 0, "modules": LISTED[family]}) if name == "freeze+modules" else None
    name = spec.name if spec else name
    method = methods.get(name)
    model, spec = _applied(name, family, tiny_dirs, spec)
    before = _eval_loss(model)  # in eval mode: no dropout, no sampled noise (PVeRA), so the drop is real
    losses = _train(model, method)
    assert _eval_loss(model) < before, f"{name} on {family}: loss did not go down: {before} then {losses}"
    expected = _logits(model)

    folder = methods.save_result(model, spec, tmp_path / "adapter")
    assert list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))
    assert methods.result_spec(folder).name == name
    loaded = methods.load_result(_base(name, family, tiny_dirs, spec), folder)
    torch.testing.assert_close(_logits(loaded), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", [m.name for m in methods.all_methods() if m.fmt == "peft"])
def test_peft_results_load_with_plain_peft(name, tiny_dirs, tmp_path):
    from peft import PeftModel

    model, spec = _applied(name, "llama", tiny_dirs)
    methods.save_result(model, spec, tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(_base(name, "llama", tiny_dirs, spec), str(tmp_path))
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=1e-5)


def _perturbed(model) -> None:
    # LoRA's B (and IA3's vectors) start so the adapter is a no-op; move them so the merge has something to do
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("name,family", _runs_on([m.name for m in methods.all_methods() if m.can_merge], FAMILIES))
def test_merge_gives_a_plain_model_with_the_same_logits(name, family, tiny_dirs, tmp_path):
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    model, spec = _applied(name, family, tiny_dirs)
    _perturbed(model)
    if methods.get(name).quantized:  # merging into 4/8-bit weights is refused: load onto a float base
        with pytest.raises(MergeRefused, match="quantised"):
            methods.merge(model)
        methods.save_result(model, spec, tmp_path)
        model = methods.load_result(tiny_model(family), tmp_path)
    expected = _logits(model)
    merged = methods.merge(model)
    assert not isinstance(merged, PeftModel)
    assert not any("lora_" in n or "ia3_" in n for n, _ in merged.named_parameters())
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())  # every tuner's layers are gone
    torch.testing.assert_close(_logits(merged), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [m.name for m in methods.all_methods() if not m.can_merge])
def test_merge_is_refused_with_the_reason(name, tiny_dirs):
    method = methods.get(name)
    model, _ = _applied(name, _family(name), tiny_dirs)
    assert method.merge_refusal and "\n" not in method.merge_refusal
    with pytest.raises(MergeRefused, match="cannot merge"):
        methods.merge(model)


@pytest.mark.parametrize("name", sorted(LINEAR_ONLY))
def test_linear_only_tuners_refuse_conv1d_in_one_line(name):
    spec, arch = _spec(name), ArchSpec.from_config(tiny_config("gpt2"))
    for call in (lambda: methods.get(name).apply(tiny_model("gpt2"), spec, Context()),
                 lambda: methods.get(name).trainable(arch, spec)):
        with pytest.raises(ConfigError, match=r"Linear layers only; gpt2's .*c_attn.* is not one") as err:
            call()
        assert "\n" not in str(err.value)


def test_prompt_methods_refuse_merge():
    for name in ("prefix", "prompt", "ptuning"):
        assert not methods.get(name).can_merge
        assert "virtual tokens" in methods.get(name).merge_refusal


def test_bitfit_on_a_model_without_biases_says_so():
    with pytest.raises(ConfigError, match="no bias terms"):
        methods.get("bitfit").apply(tiny_model("llama"), MethodSpec("bitfit"), Context())
    arch = ArchSpec.from_config(tiny_model("gpt2").config)
    model = methods.get("bitfit").apply(tiny_model("gpt2"), MethodSpec("bitfit"), Context())
    assert all(n.endswith("bias") for n, p in model.named_parameters() if p.requires_grad)
    assert methods.count_trainable(model) == methods.get("bitfit").trainable(arch, MethodSpec("bitfit"))


@pytest.mark.parametrize("knobs", [{"top_blocks": 1, "parts": ["mlp"]}, {"top_blocks": 0, "train_head": True},
                                   {"top_blocks": 9, "parts": ["attention", "norms"], "train_head": True}])
@pytest.mark.parametrize("family", FAMILIES)
def test_freeze_parts_and_head(knobs, family):
    spec = MethodSpec("freeze", knobs)
    model = methods.get("freeze").apply(tiny_model(family), spec, Context())
    arch = ArchSpec.from_config(model.config)
    assert methods.count_trainable(model) == methods.get("freeze").trainable(arch, spec)


@pytest.mark.parametrize("knobs", [{"top_blocks": 0}, {"top_blocks": 1, "parts": ["mlp"], "train_head": True}])
@pytest.mark.parametrize("family", FAMILIES)
def test_freeze_listed_modules_count_exactly(knobs, family):
    spec = MethodSpec("freeze", {**knobs, "modules": LISTED[family]})
    model = methods.get("freeze").apply(tiny_model(family), spec, Context())
    arch = ArchSpec.from_config(model.config)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".0." in n for n in trained) and any("mlp" in n for n in trained)
    assert methods.count_trainable(model) == methods.get("freeze").trainable(arch, spec)


def test_freeze_unknown_module_names_what_the_model_has():
    spec = MethodSpec("freeze", {"modules": ["lm_head", "q_proj"]})
    arch = ArchSpec.from_config(tiny_model("gpt2").config)
    for call in (lambda: methods.get("freeze").apply(tiny_model("gpt2"), spec, Context()),
                 lambda: methods.get("freeze").trainable(arch, spec)):
        with pytest.raises(ConfigError, match=r"method.modules: q_proj not in this model \(it has: .*c_attn.*ln_f"):
            call()


def test_preflight_checks_listed_modules(tiny_dirs):
    from studio import preflight
    from studio.config import RunConfig

    def found(modules):
        return preflight.problems(RunConfig.from_dict({
            "model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "freeze", "modules": modules},
            "data": {"path": str(ROOT / "presets" / "data" / "identity.jsonl")}, "train": {"max_steps": 2}}))

    assert found(["lm_head", "layers.1.mlp"]) == []
    assert len(found(["c_attn"])) == 1 and found(["c_attn"])[0].startswith("method.modules: c_attn not in this model")


@pytest.mark.parametrize("knobs", [{"placement": "attention"}, {"placement": "mlp"}, {"style": "parallel"}])
@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_placement_counts_exactly(knobs, family):
    spec = MethodSpec("adapter", {"size": 16, **knobs})
    model = methods.get("adapter").apply(tiny_model(family), spec, Context())
    arch = ArchSpec.from_config(model.config)
    assert methods.count_trainable(model) == methods.get("adapter").trainable(arch, spec)
    assert methods.get("adapter").trainable(arch, spec) * 2 == methods.get("adapter").trainable(
        arch, MethodSpec("adapter", {"size": 16}))  # one site per block instead of two
    assert methods.check_spec(MethodSpec("adapter", {"style": "pfeiffer", "placement": "attention"}))


def test_freeze_with_nothing_to_train_is_refused():
    with pytest.raises(ConfigError, match="nothing would train"):
        methods.get("freeze").apply(tiny_model("llama"), MethodSpec("freeze", {"top_blocks": 0}), Context())


@pytest.mark.parametrize("knobs", [{"use_dora": True}, {"use_rslora": True, "bias": "all", "targets": ["all-linear"]},
                                   {"bias": "lora_only", "targets": ["mlp"]}, {"targets": ["q_proj", "down_proj"]}])
@pytest.mark.parametrize("family", ("llama", "qwen2"))
def test_lora_variants_count_exactly(knobs, family):
    spec = MethodSpec("lora", knobs)
    model = methods.get("lora").apply(tiny_model(family), spec, Context())
    assert methods.count_trainable(model) == methods.get("lora").trainable(ArchSpec.from_config(model.config), spec)


@pytest.mark.parametrize("knobs", [{"prefix_projection": True}, {"prefix_projection": True, "encoder_hidden_size": 48}])
@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_projection_counts(knobs, family):
    spec = MethodSpec("prefix", {"num_virtual_tokens": 3, **knobs})
    model = methods.get("prefix").apply(tiny_model(family), spec, Context())
    assert methods.count_trainable(model) == methods.get("prefix").trainable(ArchSpec.from_config(model.config), spec)


def test_ptuning_lstm_counts():
    spec = MethodSpec("ptuning", {"encoder": "LSTM", "encoder_layers": 2, "encoder_hidden_size": 24})
    model = methods.get("ptuning").apply(tiny_model("gpt2"), spec, Context())
    assert methods.count_trainable(model) == methods.get("ptuning").trainable(ArchSpec.from_config(model.config), spec)


def test_prompt_init_from_text_uses_the_token_embeddings():
    tok = tiny_tokenizer()
    spec = MethodSpec("prompt", {"num_virtual_tokens": 4, "init": "text", "init_text": "ab"})
    base = tiny_model("llama")
    embed = base.get_input_embeddings().weight.detach().clone()
    model = methods.get("prompt").apply(base, spec, Context(tokenizer=tok))
    ids = tok("ab", add_special_tokens=False)["input_ids"]
    table = model.prompt_encoder["default"].embedding.weight
    torch.testing.assert_close(table[:2], embed[ids])
    torch.testing.assert_close(table[2:], embed[ids])
    with pytest.raises(ConfigError, match="init_text"):
        methods.get("prompt").apply(tiny_model("llama"), MethodSpec("prompt", {"init": "text"}), Context())


def test_mixed_batch_flags_match_what_peft_allows():
    assert methods.get("lora").mixed_batch(MethodSpec("lora"))
    assert not methods.get("lora").mixed_batch(MethodSpec("lora", {"use_dora": True}))
    assert not methods.get("prompt").mixed_batch() and not methods.get("full").mixed_batch()
    ids = _batch()
    for knobs, ok in (({}, True), ({"use_dora": True}, False)):
        model = methods.get("lora").apply(tiny_model("llama"), MethodSpec("lora", knobs), Context()).eval()
        if ok:
            model(input_ids=ids, adapter_names=["__base__", "default"])
        else:
            with pytest.raises(ValueError, match="DoRA"):
                model(input_ids=ids, adapter_names=["__base__", "default"])


@pytest.mark.parametrize("name,family", _runs_on([m.name for m in methods.all_methods()
                                                 if m.fmt != "weights" and not m.quantized], FAMILIES))
def test_adapter_off_runs_the_base(name, family, tiny_dirs):
    base_logits = _logits(tiny_model(family))
    model, _ = _applied(name, family, tiny_dirs)
    _perturbed(model)
    with methods.adapter_off(model):
        off = _logits(model)
    assert off.shape[1] == base_logits.shape[1] or name == "prompt"
    if name != "prompt":  # prompt tuning's output also covers its virtual tokens
        torch.testing.assert_close(off, base_logits)
    assert not torch.allclose(_logits(model)[:, -base_logits.shape[1]:], base_logits)


def test_adapter_off_is_refused_for_weight_methods():
    model = methods.get("full").apply(tiny_model("gpt2"), MethodSpec("full"), Context())
    with pytest.raises(ConfigError, match="no base"):
        with methods.adapter_off(model):
            pass


def test_quantised_methods_set_how_the_base_loads():
    spec = methods.model_spec_for(ModelSpec(), MethodSpec("qlora", {"quant_type": "fp4", "double_quant": False}))
    assert (spec.quantization, spec.double_quant) == ("fp4", False)
    assert methods.model_spec_for(ModelSpec(), MethodSpec("lora_8bit")).quantization == "8bit"
    assert methods.model_spec_for(ModelSpec(), MethodSpec("lora")) == ModelSpec()
    with pytest.raises(ConfigError, match="quantised"):
        methods.get("qlora").apply(tiny_model("llama"), MethodSpec("qlora"), Context())


def test_weight_methods_refuse_a_quantised_base(tiny_dirs):
    model = _base("qlora", "llama", tiny_dirs)
    with pytest.raises(ConfigError, match="quantised base"):
        methods.get("full").apply(model, MethodSpec("full"), Context())


def test_adalora_hook_and_schedule():
    method = methods.get("adalora")
    assert len(methods.trainer_callbacks(method)) == 1
    assert methods.trainer_callbacks(methods.get("lora")) == []
    with pytest.raises(ConfigError, match="total number of steps"):
        method.apply(tiny_model("llama"), MethodSpec("adalora"), Context())
    with pytest.raises(ConfigError, match="below 1"):
        method.apply(tiny_model("llama"), MethodSpec("adalora", {"tinit": 0.6, "tfinal": 0.5}), Context(total_steps=50))
    model = method.apply(tiny_model("llama"), MethodSpec("adalora"), Context(total_steps=200))
    cfg = model.peft_config["default"]
    assert (cfg.tinit, cfg.tfinal, cfg.total_step) == (20, 40, 200)


def _phi3_config():
    from transformers import Phi3Config

    return Phi3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=512, max_position_embeddings=1024, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2)


@pytest.mark.parametrize("name,knobs", [("lora", {"targets": ["all-linear"]}), ("lora", {"targets": ["qkv_proj"]}),
                                        ("ia3", {}), ("adalora", {}), ("freeze", {"top_blocks": 1})])
def test_fused_phi3_layers_are_discovered_and_counted(name, knobs):
    from transformers import AutoModelForCausalLM

    from studio import targets

    arch = ArchSpec.from_config(_phi3_config())
    found = targets.for_arch(arch)  # from a meta-device copy, not a table of names
    assert targets.layout(arch).source == "model"
    assert set(found["attention"]) == {"qkv_proj", "o_proj"} and set(found["mlp"]) == {"gate_up_proj", "down_proj"}
    assert targets.linear_shapes(arch)["gate_up_proj"] == (64, 2 * 128, 0)
    spec = MethodSpec(name, knobs)
    torch.manual_seed(0)
    model = methods.get(name).apply(AutoModelForCausalLM.from_config(_phi3_config()), spec, Context(total_steps=10))
    assert methods.get(name).trainable(arch, spec) == methods.count_trainable(model) > 0


def test_a_model_type_that_cannot_be_built_falls_back_to_the_table():
    from studio import targets

    arch = dataclasses.replace(ArchSpec.from_config(tiny_model("llama").config), model_type="someone_custom")
    assert targets.layout(arch).source == "table"
    assert targets.for_arch(arch)["attention"] == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_unknown_targets_name_what_the_model_has():
    with pytest.raises(ConfigError, match="c_attn"):
        methods.get("lora").apply(tiny_model("gpt2"), MethodSpec("lora", {"targets": ["q_proj"]}), Context())


def test_every_method_validates_its_knobs():
    assert methods.check_spec(MethodSpec("adapter", {"style": "sideways"}))
    assert methods.check_spec(MethodSpec("qlora", {"quant_type": "int3"}))
    assert methods.check_spec(MethodSpec("nope"))
    for m in methods.all_methods():
        assert methods.check_spec(MethodSpec(m.name)) == []
        assert all(k.help for k in m.knobs)


def test_cli_lists_every_method_with_its_knobs():
    out = subprocess.run([sys.executable, "-m", "studio", "methods", "--json"], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    items = {m["name"]: m for m in json.loads(out.stdout)}
    assert set(items) == set(ALL) >= {"full", "freeze", "lora", "qlora", "lora_8bit", "adalora", "ia3", "prefix",
                                      "prompt", "ptuning", "adapter", "bitfit"}
    assert {k["name"] for k in items["qlora"]["knobs"]} >= {"quant_type", "double_quant", "compute_dtype"}
    assert items["lora"]["mixed_batch"] and items["ia3"]["can_merge"] and items["prompt"]["merge_refusal"]


@pytest.mark.slow
def test_embedded_model_counts_match():
    from studio import models

    arch = models.read_arch(ModelSpec())
    for name in ("lora", "ia3", "adapter", "prefix"):
        model, tok = models.load(ModelSpec())
        model = methods.get(name).apply(model, MethodSpec(name), Context(tokenizer=tok, total_steps=10))
        assert methods.count_trainable(model) == methods.get(name).trainable(arch, MethodSpec(name))


# --- the recommendation helper ------------------------------------------------------------------------------

GB = 2**30


@pytest.mark.parametrize("params,memory,goal,method", [
    (7e9, 8 * GB, "style", "qlora"),              # 16-bit 7B does not fit 8 GB
    (7e9, 40 * GB, "style", "lora"),
    (135e6, 16 * GB, "knowledge", "full"),        # small model with room
    (7e9, 80 * GB, "knowledge", "lora"),
    (70e9, 48 * GB, "knowledge", "qlora"),
    (3e9, 24 * GB, "classification", "ia3"),
    (7e9, 40 * GB, "minimal_storage", "prompt"),
    (135e6, 4 * GB, "minimal_storage", "ia3"),
])
def test_recommendation(params, memory, goal, method):
    from studio.recommend import recommend

    rec = recommend(params, memory, goal)
    assert rec.method == method and rec.reason and "\n" not in rec.reason
    assert methods.check_spec(rec.spec()) == []


def test_recommendation_refuses_what_cannot_fit():
    from studio.recommend import recommend

    with pytest.raises(ConfigError, match="4-bit"):
        recommend(70e9, 8 * GB, "style")
    with pytest.raises(ConfigError, match="goal"):
        recommend(1e9, 8 * GB, "vibes")
