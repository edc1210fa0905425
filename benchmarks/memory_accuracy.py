"""Hold the memory estimate against measured peaks: real training steps across a matrix of runs.

On a CUDA machine the measure is torch.cuda.max_memory_allocated over the second step (after warm-up);
on a CPU it is the peak of live tensor storage during the second step, tracked by a
TorchDispatchMode that follows every storage op outputs create (``LiveStorage`` below). Both are
compared with ``Breakdown.allocated_peak_bytes`` (the allocator's view: no CUDA context, no margin).

    PYTHONPATH=. python benchmarks/memory_accuracy.py            # the standard matrix (~10 min, 2 idle cores)
    PYTHONPATH=. python benchmarks/memory_accuracy.py --quick    # a handful of rows
    PYTHONPATH=. python benchmarks/memory_accuracy.py --list     # the rows, numbered
    PYTHONPATH=. python benchmarks/memory_accuracy.py --rows 11,12   # only those rows
    PYTHONPATH=. python benchmarks/memory_accuracy.py --grpo     # GRPO: whole TRL steps (answers, then training)
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

from studio import losses, memory, methods  # noqa: E402
from studio.config import MethodSpec, ObjectiveSpec, RunConfig  # noqa: E402
from studio.methods import Context  # noqa: E402
from studio.models import ArchSpec  # noqa: E402
from studio.train_parts import OptimizerInBackward  # noqa: E402


def _shapes() -> dict:
    """Small random models of realistic proportions, and the embedded SmolLM2-135M's own config."""
    from transformers import (AutoConfig, FalconConfig, Gemma2Config, Gemma3TextConfig, GPT2Config, LlamaConfig,
                              MixtralConfig, Phi3Config, Qwen2Config, Qwen3MoeConfig)

    from studio.models import embedded_dir

    attn = dict(hidden_size=256, num_attention_heads=8, num_key_value_heads=2, vocab_size=8000, num_hidden_layers=3)
    return {
        "llama-gqa": LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                                 num_key_value_heads=2, vocab_size=8000, tie_word_embeddings=False),
        "qwen2-tied": Qwen2Config(hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=6,
                                  num_key_value_heads=2, vocab_size=12000, tie_word_embeddings=True),
        "smollm2-135m": AutoConfig.from_pretrained(embedded_dir()),
        # other families, the same proportions: every expert's weights, routers and top-k routing (Mixtral,
        # Qwen3-MoE), soft-capping, extra norms and sliding windows (Gemma 2/3), fused projections (Phi-3's
        # qkv_proj and gate_up_proj, GPT-2's Conv1D c_attn, Falcon's query_key_value), learned positions
        # and dropout (GPT-2)
        "mixtral-moe": MixtralConfig(**attn, intermediate_size=512, num_local_experts=4, num_experts_per_tok=2),
        "qwen3-moe": Qwen3MoeConfig(**attn, head_dim=32, intermediate_size=512, moe_intermediate_size=192,
                                    num_experts=8, num_experts_per_tok=2),
        "gemma2": Gemma2Config(**attn, head_dim=32, intermediate_size=512, sliding_window=64),
        "gemma3": Gemma3TextConfig(**attn, head_dim=32, intermediate_size=512, sliding_window=64,
                                   layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
        "phi3": Phi3Config(**attn, intermediate_size=512, pad_token_id=0, bos_token_id=1, eos_token_id=2),
        "gpt2": GPT2Config(n_embd=256, n_layer=3, n_head=8, vocab_size=8000, n_positions=512, bos_token_id=0,
                           eos_token_id=0),
        "falcon": FalconConfig(hidden_size=256, num_hidden_layers=3, num_attention_heads=8, vocab_size=8000,
                               bos_token_id=0, eos_token_id=0),
    }


KNOBS = {"lora": {"r": 8, "targets": ["q_proj", "v_proj"]}, "qlora": {"r": 8, "targets": ["q_proj", "v_proj"],
         "compute_dtype": "fp32", "double_quant": False}, "freeze": {"top_blocks": 1},
         "prompt": {"num_virtual_tokens": 16}, "prefix": {"num_virtual_tokens": 16}}

# (shape, method, gradient checkpointing, micro-batch, seq len, dtype, attention[, knobs beyond KNOBS])
MATRIX = [
    ("llama-gqa", "full", False, 2, 128, "fp32", "sdpa"),
    ("llama-gqa", "full", True, 2, 128, "fp32", "sdpa"),
    ("llama-gqa", "full", False, 4, 256, "fp32", "sdpa"),
    ("llama-gqa", "lora", False, 1, 64, "fp32", "sdpa"),
    ("llama-gqa", "lora", False, 2, 256, "fp32", "sdpa"),
    ("llama-gqa", "lora", True, 4, 256, "fp32", "sdpa"),
    ("llama-gqa", "lora", False, 2, 256, "bf16", "sdpa"),
    ("llama-gqa", "lora", False, 2, 256, "fp32", "eager"),
    ("llama-gqa", "freeze", False, 2, 256, "fp32", "sdpa"),
    ("llama-gqa", "ia3", False, 2, 256, "fp32", "sdpa"),
    ("llama-gqa", "prompt", False, 2, 256, "fp32", "sdpa"),
    ("llama-gqa", "prefix", False, 2, 256, "fp32", "sdpa"),
    ("llama-gqa", "adapter", False, 2, 256, "fp32", "sdpa"),
    ("qwen2-tied", "bitfit", False, 2, 256, "fp32", "sdpa"),  # llama has no biases to train
    ("llama-gqa", "qlora", False, 2, 128, "fp32", "sdpa"),
    ("qwen2-tied", "full", False, 2, 128, "fp32", "sdpa"),
    ("qwen2-tied", "lora", False, 4, 128, "fp32", "sdpa"),
    ("qwen2-tied", "lora", True, 2, 256, "fp32", "sdpa"),
    ("qwen2-tied", "full", False, 2, 256, "bf16", "sdpa"),
    ("smollm2-135m", "lora", False, 1, 128, "fp32", "sdpa"),
    ("smollm2-135m", "lora", True, 2, 256, "fp32", "sdpa"),
    ("smollm2-135m", "full", False, 1, 128, "fp32", "sdpa"),
    ("llama-gqa", "adapter", False, 2, 256, "fp32", "sdpa", {"style": "pfeiffer"}),
    ("llama-gqa", "adapter", False, 2, 256, "fp32", "sdpa", {"style": "parallel"}),
    ("llama-gqa", "adapter", False, 2, 256, "fp32", "sdpa", {"placement": "attention"}),
    ("mixtral-moe", "full", False, 2, 128, "fp32", "sdpa"),
    ("mixtral-moe", "lora", False, 2, 256, "fp32", "sdpa"),
    ("mixtral-moe", "lora", True, 2, 256, "fp32", "sdpa"),
    ("qwen3-moe", "full", False, 2, 128, "fp32", "sdpa"),
    ("qwen3-moe", "lora", False, 2, 256, "bf16", "sdpa"),
    ("gemma2", "full", False, 2, 128, "fp32", "eager"),  # Gemma 2 has no sdpa path in transformers
    ("gemma2", "lora", False, 2, 256, "fp32", "eager"),
    ("gemma3", "full", False, 2, 128, "fp32", "sdpa"),
    ("gemma3", "lora", False, 2, 256, "fp32", "sdpa"),
    ("phi3", "full", False, 2, 128, "fp32", "sdpa"),
    ("phi3", "lora", False, 2, 256, "fp32", "sdpa", {"targets": ["all-linear"]}),
    ("gpt2", "full", False, 2, 128, "fp32", "sdpa"),
    ("gpt2", "lora", False, 2, 256, "fp32", "sdpa", {"targets": ["all-linear"]}),
    ("falcon", "full", False, 2, 128, "fp32", "sdpa"),
    ("falcon", "lora", False, 2, 256, "fp32", "sdpa", {"targets": ["all-linear"]}),
]
QUICK = [0, 4, 5, 10, 19]

# --- more PEFT tuners and the memory-saving optimizers (a 9th element names the optimizer; default adamw) ----
METHOD_ROWS = [
    ("llama-gqa", "vera", False, 2, 256, "fp32", "sdpa"),
    ("llama-gqa", "loha", False, 2, 256, "fp32", "sdpa"),
    ("llama-gqa", "oft", False, 2, 256, "fp32", "sdpa"),
    ("llama-gqa", "fourierft", False, 2, 256, "fp32", "sdpa"),
    ("llama-gqa", "ln_tuning", False, 2, 256, "fp32", "sdpa"),
    ("llama-gqa", "full", False, 2, 128, "fp32", "sdpa", {}, "adafactor"),
    ("llama-gqa", "full", False, 2, 128, "fp32", "sdpa", {}, "lion"),
    ("llama-gqa", "full", False, 2, 128, "fp32", "sdpa", {}, "lion_8bit"),
    ("llama-gqa", "lora", False, 2, 256, "fp32", "sdpa", {}, "adafactor"),
]
MATRIX += METHOD_ROWS

# --- the training levers kept as options (a 10th element: train.* settings beyond the row's) ------------------
LEVER_ROWS = [
    ("llama-gqa", "lora", False, 2, 256, "fp32", "sdpa", {}, "adamw", {"loss_chunk_tokens": 64}),
    ("llama-gqa", "lora", True, 2, 256, "fp32", "sdpa", {}, "adamw", {"loss_chunk_tokens": 64}),
    ("llama-gqa", "lora", False, 2, 256, "bf16", "sdpa", {}, "adamw", {"loss_chunk_tokens": 64}),
    ("smollm2-135m", "lora", False, 1, 512, "fp32", "sdpa", {}, "adamw", {"loss_chunk_tokens": 256}),
    ("llama-gqa", "lora", False, 2, 256, "fp32", "sdpa", {}, "adamw_fused"),
    ("llama-gqa", "full", False, 2, 128, "fp32", "sdpa", {}, "adamw_fused"),
    ("llama-gqa", "full", False, 2, 128, "fp32", "sdpa", {}, "adamw", {"optimizer_in_backward": True,
                                                                       "max_grad_norm": 0.0}),
    ("smollm2-135m", "full", False, 1, 128, "fp32", "sdpa", {}, "adamw", {"optimizer_in_backward": True,
                                                                          "max_grad_norm": 0.0}),
]
MATRIX += LEVER_ROWS

# --- preference objectives through TRL's own trainer step (train.objective in the 10th element; default sft):
# chosen and rejected through the model (2 x micro-batch sequences), the reference forward with the adapter off
PREFERENCE_ROWS = [
    ("llama-gqa", "lora", False, 2, 256, "fp32", "sdpa", {}, "adamw", {"objective": "dpo"}),
    ("llama-gqa", "full", False, 2, 128, "fp32", "sdpa", {}, "adamw", {"objective": "dpo"}),
]
MATRIX += PREFERENCE_ROWS


def _optimizer(name: str, params):
    """The optimizer the Trainer builds for ``train.optimizer`` ``name`` (its own class and arguments)."""
    from transformers import Trainer, TrainingArguments

    from studio.train_parts import OPTIMIZERS

    args = TrainingArguments(output_dir="/tmp", optim=OPTIMIZERS[name], learning_rate=1e-4, use_cpu=True,
                             report_to=[])
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    return cls(params, **kwargs)


def _cfg(method: str, gc_on: bool, batch: int, seq: int, dtype: str, attn: str, knobs: dict) -> RunConfig:
    cfg = RunConfig()
    cfg.method = MethodSpec(method, {**KNOBS.get(method, {}), **knobs})
    cfg.model.dtype, cfg.model.attn_implementation = dtype, attn
    t = cfg.train
    t.micro_batch_size, t.max_seq_len, t.gradient_checkpointing, t.precision = batch, seq, gc_on, dtype
    t.optimizer, t.grad_accum = "adamw", 1
    return cfg


def _build(config, cfg: RunConfig):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config._attn_implementation = cfg.model.attn_implementation
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg.model.dtype]
    spec = methods.model_spec_for(cfg.model, cfg.method)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if spec.quantization != "none":
        model = _quantise(model, config, spec, dtype)
    model.train()
    return methods.get(cfg.method.name).apply(model, cfg.method, Context(
        model_spec=spec, total_steps=2, gradient_checkpointing=cfg.train.gradient_checkpointing))


def _build_with_reference(config, cfg: RunConfig):
    """The method applied to a fresh model and, where the method has no adapter to switch off (full
    fine-tuning), the frozen reference copy a run keeps (``preference_train.reference_copy``)."""
    from studio import objectives, preference_train

    objective, method = objectives.get(cfg.train.objective.name), methods.get(cfg.method.name)
    if not preference_train.needs_reference_copy(objective, method):
        return _build(config, cfg), None
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config._attn_implementation = cfg.model.attn_implementation
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg.model.dtype]
    base = AutoModelForCausalLM.from_config(config, dtype=dtype)
    reference = preference_train.reference_copy(base)
    base.train()
    return method.apply(base, cfg.method, Context(model_spec=methods.model_spec_for(cfg.model, cfg.method),
                                                  total_steps=2, gradient_checkpointing=False)), reference


def _quantise(model, config, spec, dtype):
    """Save the random model and load it back 4-bit through transformers, as a real QLoRA run does."""
    import tempfile

    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.quantization,
                               bnb_4bit_use_double_quant=spec.double_quant, bnb_4bit_compute_dtype=dtype)
        return AutoModelForCausalLM.from_pretrained(tmp, quantization_config=q, dtype=dtype,
                                                    attn_implementation=config._attn_implementation)


def _step(model, opt, batch, chunk: int = 0):
    if chunk:  # as StudioTrainer with train.loss_chunk_tokens: hidden states only, the loss in chunks
        head = losses.head_for_chunked_loss(model)
        loss = losses.chunked_model_loss(model, batch, head, chunk) / batch["labels"][:, 1:].numel()
    else:
        loss = model(**batch).loss  # the outputs (logits) go out of scope here, as in Trainer.compute_loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _preference_trainer(model, cfg: RunConfig, reference):
    """TRL's trainer for ``cfg``'s objective around ``model``, built as a run builds it (the embedded
    tokenizer only prepares a one-row dataset; the measured batch is random ids of the shape's vocabulary)."""
    import tempfile

    from studio import models, objectives, preference_train
    from studio.config import ModelSpec
    from studio.data.preference import Pairs, PairStats

    row = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}
    objective = objectives.get(cfg.train.objective.name)
    cfg.train.val_fraction = 0.0
    pairs = Pairs(train=[row, row], eval=[], stats=PairStats())
    return preference_train.build_trainer(cfg, objective, model, models.load_tokenizer(ModelSpec(id="embedded")),
                                          pairs, output_dir=tempfile.mkdtemp(), lr=1e-4, total_steps=2,
                                          callbacks=[], reference=reference)


def measure_preference(model, cfg: RunConfig, vocab: int, reference=None) -> tuple[int, str]:
    """Peak live bytes of the second preference step: TRL's compute_loss on micro-batch pairs of ``seq``
    tokens each (half prompt, half answer), backward, optimizer step."""
    b, seq = cfg.train.micro_batch_size, cfg.train.max_seq_len
    trainer = _preference_trainer(model, cfg, reference)
    gen = torch.Generator().manual_seed(0)
    half = seq // 2
    rows = [{"prompt_ids": torch.randint(3, vocab, (half,), generator=gen).tolist(),
             "chosen_ids": torch.randint(3, vocab, (seq - half,), generator=gen).tolist(),
             "rejected_ids": torch.randint(3, vocab, (seq - half,), generator=gen).tolist()} for _ in range(b)]
    batch = trainer.data_collator(rows)
    model = trainer.model
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        trainer.compute_loss(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    tracker = LiveStorage(model, opt)
    with tracker:
        step()
    return tracker.peak, "cpu live storage, TRL step"


def measure(model, batch_size: int, seq: int, vocab: int, optimizer: str = "adamw", chunk: int = 0,
            in_backward: bool = False) -> tuple[int, str]:
    """Peak bytes of the second training step and the measure used (``chunk``: train.loss_chunk_tokens,
    ``in_backward``: train.optimizer_in_backward)."""
    ids = torch.randint(0, vocab, (batch_size, seq), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "labels": ids.clone()}  # no padding: causal sdpa, as with packing
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if optimizer == "adamw" else _optimizer(optimizer, params)
    if in_backward:
        opt = OptimizerInBackward(opt)
    if torch.cuda.is_available():
        batch = {k: v.cuda() for k, v in batch.items()}
        _step(model, opt, batch, chunk)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        _step(model, opt, batch, chunk)
        return torch.cuda.max_memory_allocated(), "cuda max_memory_allocated"
    _step(model, opt, batch, chunk)
    tracker = LiveStorage(model, opt)
    with tracker:
        _step(model, opt, batch, chunk)
    return tracker.peak, "cpu live storage"


class LiveStorage(TorchDispatchMode):
    """Peak bytes of live tensor storage: what exists before (parameters, buffers, optimizer state) plus
    every storage an op creates while active, released when its last reference dies (weakref callback).

    torch's MemTracker does the same by category but hooks every parameter, which fails on frozen ones.
    """

    def __init__(self, model, opt):
        super().__init__()
        self._seen: dict[int, weakref.ref] = {}
        self.live = 0
        tensors = list(model.parameters()) + list(model.buffers())
        states = [st for o in getattr(opt, "optimizers", [opt]) for st in o.state.values()]  # in-backward: one each
        tensors += [v for st in states for v in st.values() if isinstance(v, torch.Tensor)]
        for t in tensors:
            self._track(t)
        self.peak = self.live

    def _track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = st.data_ptr()
        if key == 0 or key in self._seen:
            return
        size = st.nbytes()
        self.live += size

        def gone(_ref, key=key, size=size):
            self.live -= size
            self._seen.pop(key, None)

        self._seen[key] = weakref.ref(st, gone)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and not t.is_meta:
                self._track(t)
        self.peak = max(self.peak, self.live)
        return out


def run(rows) -> list[dict]:
    shapes, out = _shapes(), []
    for shape, method, gc_on, b, s, dtype, attn, *more in rows:
        if method not in methods.names():
            continue
        knobs = more[0] if more else {}
        optimizer = more[1] if len(more) > 1 else "adamw"
        train = dict(more[2]) if len(more) > 2 else {}
        objective = train.pop("objective", "sft")
        cfg = _cfg(method, gc_on, b, s, dtype, attn, knobs)
        cfg.train.optimizer = optimizer
        cfg.train.objective = ObjectiveSpec(objective)
        for key, value in train.items():
            setattr(cfg.train, key, value)
        label = " ".join([method] + [f"{k}={v}" for k, v in {**knobs, **train}.items()]
                         + ([optimizer] * (optimizer != "adamw")) + ([objective] * (objective != "sft")))
        config = shapes[shape]
        arch = ArchSpec.from_config(config)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        est = memory.estimate(arch, cfg, device=device)
        # the baseline: the hand formulas alone (no config to trace), as the estimate stood before tracing
        formulas = memory.estimate(dataclasses.replace(arch, config=""), cfg, device=device).allocated_peak_bytes
        t0 = time.time()
        try:
            if objective == "sft":
                model = _build(config, cfg)
                measured, how = measure(model, b, s, arch.vocab_size, optimizer, train.get("loss_chunk_tokens", 0),
                                        train.get("optimizer_in_backward", False))
            else:
                model, reference = _build_with_reference(config, cfg)
                measured, how = measure_preference(model, cfg, arch.vocab_size, reference)
        except Exception as err:  # report and go on: one broken method must not hide the rest
            print(f"{shape} {method}: skipped ({type(err).__name__}: {str(err).splitlines()[0][:120]})",
                  file=sys.stderr)
            continue
        finally:
            gc.collect()
        err = est.allocated_peak_bytes / measured - 1
        out.append(dict(shape=shape, method=label, gc=gc_on, batch=b, seq=s, dtype=dtype, attn=attn,
                        measured=measured, estimate=est.allocated_peak_bytes, error=err, measure=how,
                        phase=est.peak_phase, seconds=time.time() - t0, formulas=formulas))
        r = out[-1]
        print(f"| {shape} | {label} | {'on' if gc_on else 'off'} | {b} | {s} | {dtype} | {attn} | "
              f"{measured / 1e6:.1f} | {r['estimate'] / 1e6:.1f} | {err * 100:+.1f}% | {formulas / 1e6:.1f} | "
              f"{(formulas / measured - 1) * 100:+.1f}% | {how} |", flush=True)
    return out


# --- GRPO: one whole TRL GRPOTrainer step (writing the answers, then training on them) -------------------
# (shape, micro-batch = answers a step, answers per prompt, answer tokens); the embedded model's tokenizer
# writes the prompts, so the shapes take its vocabulary; every answer runs to its full length (random weights
# rarely sample the end token), so the estimate's prompt + max_completion_length is what is measured
GRPO_ROWS = [("llama-gqa", 8, 4, 16), ("llama-gqa", 8, 4, 64)]


class _PeakAt(LiveStorage):
    """LiveStorage that also remembers the op at which the peak was reached."""

    at = ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        before = self.peak
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if self.peak > before:
            self.at = str(func)
        return out


def run_grpo(rows) -> list[dict]:
    """Peak live storage of the second GRPO step against the estimate's, through the studio's own trainer."""
    import tempfile

    from transformers import AutoTokenizer, TrainerCallback

    from studio import grpo_train, objectives
    from studio.config import ObjectiveSpec
    from studio.data.preference import Pairs
    from studio.models import embedded_dir

    tok = AutoTokenizer.from_pretrained(embedded_dir())
    prompt = [{"role": "user", "content": "What is 3 + 4? Reply with only the number."}]
    p_len = len(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
                ["input_ids"])
    out = []
    for shape, batch, group, answer in rows:
        config = _shapes()[shape]
        config.vocab_size, config.bos_token_id, config.eos_token_id = len(tok), tok.bos_token_id, tok.eos_token_id
        cfg = _cfg("lora", False, batch, p_len, "fp32", "sdpa", {})
        cfg.train.objective = ObjectiveSpec("grpo", {"num_generations": group, "max_completion_length": answer})
        cfg.train.rewards = [{"kind": "length", "min_tokens": 1, "max_tokens": answer}]
        cfg.train.max_steps, cfg.train.save_steps = 2, 1000
        est = memory.estimate(ArchSpec.from_config(config), cfg, device="cpu")
        model = _build(config, cfg)
        holder: dict = {}

        class Measure(TrainerCallback):  # the second step, after the optimizer state exists
            def on_step_begin(self, args, state, control, **kw):
                if state.global_step == 1:
                    holder["t"] = _PeakAt(model, holder["trainer"].optimizer).__enter__()

            def on_step_end(self, args, state, control, **kw):
                if state.global_step == 2:
                    holder["t"].__exit__(None, None, None)

        with tempfile.TemporaryDirectory() as tmp:
            holder["trainer"] = grpo_train.build_trainer(
                cfg, objectives.get("grpo"), model, tok, Pairs([{"prompt": prompt}] * (2 * batch), [], None),
                output_dir=tmp, lr=1e-4, total_steps=2, callbacks=[Measure()])
            holder["trainer"].train()
        measured, err = holder["t"].peak, est.allocated_peak_bytes / holder["t"].peak - 1
        out.append(dict(shape=shape, batch=batch, group=group, answer=answer, measured=measured, error=err,
                        estimate=est.allocated_peak_bytes, phase=est.peak_phase, at=holder["t"].at))
        print(f"| {shape} (vocab {len(tok)}) | GRPO {batch // group}x{group} answers of {answer} | {p_len} | "
              f"{measured / 1e6:.1f} | {est.allocated_peak_bytes / 1e6:.1f} ({est.peak_phase}) | {err * 100:+.1f}% "
              f"| {holder['t'].at} |", flush=True)
        gc.collect()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only a handful of rows")
    ap.add_argument("--rows", help="comma-separated row numbers (see --list) to run instead of the matrix")
    ap.add_argument("--list", action="store_true", help="print the rows with their numbers and exit")
    ap.add_argument("--grpo", action="store_true", help="only the GRPO rows (a whole TRL step each)")
    args = ap.parse_args()
    if args.grpo:
        print("| shape | run | prompt tokens | measured MB | estimate MB (phase) | error | op at the measured peak |")
        print("|---|---|---:|---:|---:|---:|---|")
        run_grpo(GRPO_ROWS)
        return 0
    if args.list:
        for i, row in enumerate(MATRIX):
            print(i, *row)
        return 0
    picked = [int(i) for i in args.rows.split(",")] if args.rows else (QUICK if args.quick else range(len(MATRIX)))
    rows = [MATRIX[i] for i in picked]
    print("| shape | method | checkpointing | micro-batch | seq | dtype | attention | measured MB | estimate MB "
          "| error | formulas only MB | error | measure |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = run(rows)
    if results:
        worst = max(results, key=lambda r: abs(r["error"]))
        inside = sum(abs(r["error"]) <= 0.10 for r in results)
        print(f"\n{inside}/{len(results)} rows within 10%; worst: {worst['shape']} {worst['method']} "
              f"gc={'on' if worst['gc'] else 'off'} b={worst['batch']} s={worst['seq']} {worst['dtype']} "
              f"{worst['attn']}: {worst['error'] * 100:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
