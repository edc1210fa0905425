"""The three tables of benchmarks/gpu_suite.py (imported after that script has installed what was missing)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from memory_accuracy import LiveStorage, measure  # the same measure the CPU matrix uses
from studio import losses, memory, methods
from studio.config import MethodSpec, RunConfig
from studio.models import ArchSpec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (shape, method, checkpointing, knobs beyond r/targets, loss_chunk_tokens); GPU rows at 2,048 tokens
GPU_ROWS = [
    ("qwen2.5-0.5b", "lora", False, {}, 0), ("qwen2.5-0.5b", "lora", True, {}, 0),
    ("qwen2.5-0.5b", "lora", False, {}, 1024), ("qwen2.5-0.5b", "lora", True, {}, 1024),
    ("qwen2.5-0.5b", "qlora", False, {"double_quant": True}, 0),
    ("qwen2.5-0.5b", "qlora", False, {"double_quant": False}, 0),
    ("qwen2.5-0.5b", "qlora", True, {"double_quant": True}, 1024),
    ("llama-3.2-1b", "lora", False, {}, 0), ("llama-3.2-1b", "lora", True, {}, 0),
    ("llama-3.2-1b", "lora", False, {}, 1024),
    ("llama-3.2-1b", "qlora", True, {"double_quant": True}, 0),
    ("llama-3.2-1b", "qlora", True, {"double_quant": False}, 0),
]
CPU_ROWS = [("tiny-llama", "lora", False, {}, 0), ("tiny-llama", "lora", True, {}, 0),
            ("tiny-llama", "lora", False, {}, 64), ("tiny-llama", "qlora", False, {"double_quant": True}, 0),
            ("tiny-llama", "qlora", False, {"double_quant": False}, 0)]


def machine(cuda: bool) -> str:
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), {versions}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU, {versions}"


def _run_config(method: str, gc_on: bool, knobs: dict, chunk: int, seq: int, dtype: str) -> RunConfig:
    cfg = RunConfig()
    extra = {"compute_dtype": dtype} if method == "qlora" else {}
    cfg.method = MethodSpec(method, {"r": 16, "targets": ["all-linear"], **extra, **knobs})
    cfg.model.dtype = dtype
    t = cfg.train
    t.micro_batch_size, t.max_seq_len, t.gradient_checkpointing, t.precision = 1, seq, gc_on, dtype
    t.optimizer, t.grad_accum, t.loss_chunk_tokens = "adamw", 1, chunk
    return cfg


def _build(config, cfg: RunConfig, cuda: bool):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg.model.dtype]
    spec = methods.model_spec_for(cfg.model, cfg.method)
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if spec.quantization != "none":  # through a saved copy, as a real QLoRA run loads it
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            del model
            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.quantization,
                                   bnb_4bit_use_double_quant=spec.double_quant, bnb_4bit_compute_dtype=dtype)
            model = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=q, dtype=dtype,
                                                         device_map="cuda" if cuda else None)
    model.train()
    return methods.get(cfg.method.name).apply(model, cfg.method, methods.Context(
        model_spec=spec, total_steps=2, gradient_checkpointing=cfg.train.gradient_checkpointing))


def _chunked_step(model, opt, batch, chunk: int):
    """A step as StudioTrainer takes it with train.loss_chunk_tokens: hidden states only, loss in chunks."""
    head = losses.head_for_chunked_loss(model)
    loss = losses.chunked_model_loss(model, batch, head, chunk) / batch["labels"][:, 1:].numel()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure_chunked(model, seq: int, vocab: int, chunk: int) -> tuple[int, str]:
    """Peak bytes of the second step with the chunked loss (CUDA allocator peak, or CPU live storage)."""
    device = "cuda" if next(model.parameters()).is_cuda else "cpu"
    ids = torch.randint(0, vocab, (1, seq), generator=torch.Generator().manual_seed(0)).to(device)
    batch = {"input_ids": ids, "labels": ids.clone()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    _chunked_step(model, opt, batch, chunk)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        _chunked_step(model, opt, batch, chunk)
        return torch.cuda.max_memory_allocated(), "cuda max_memory_allocated"
    tracker = LiveStorage(model, opt)
    with tracker:
        _chunked_step(model, opt, batch, chunk)
    return tracker.peak, "cpu live storage"


def memory_table(cuda: bool, build_config) -> None:
    """(a): measured peak against the estimate, one row each."""
    seq, dtype = (2048, "bf16") if cuda else (128, "fp32")
    print("\n## (a) memory: measured peak against memory.estimate\n")
    print("| shape | method | checkpointing | loss chunk | seq | measured MiB | estimate MiB | error | measure |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for shape, method, gc_on, knobs, chunk in GPU_ROWS if cuda else CPU_ROWS:
        config = build_config(shape)
        cfg = _run_config(method, gc_on, knobs, chunk, seq, dtype)
        est = memory.estimate(ArchSpec.from_config(config), cfg, device="cuda" if cuda else "cpu")
        label = method + ("" if method == "lora" else f" nf4 dq={'on' if knobs['double_quant'] else 'off'}")
        try:
            model = _build(config, cfg, cuda)
            got, how = (measure_chunked(model, seq, config.vocab_size, chunk) if chunk else
                        measure(model, 1, seq, config.vocab_size))
        except Exception as err:  # one failing row must not hide the others
            print(f"| {shape} | {label} | {'on' if gc_on else 'off'} | {chunk} | {seq} | failed: "
                  f"{type(err).__name__}: {str(err).splitlines()[0][:100]} ||||")
            continue
        finally:
            model = None
            if cuda:
                torch.cuda.empty_cache()
        err = est.allocated_peak_bytes / got - 1
        print(f"| {shape} | {label} | {'on' if gc_on else 'off'} | {chunk or '-'} | {seq} | {got / 2**20:.0f} | "
              f"{est.allocated_peak_bytes / 2**20:.0f} | {err:+.1%} | {how} |", flush=True)


def random_model_dir(config, folder: Path, cuda: bool) -> Path:
    """A model folder with random weights for ``config`` and the embedded model's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if cuda else torch.float32)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(_tokenizer_source()).save_pretrained(folder)
    return folder


def _tokenizer_source() -> Path:
    """A carried copy of the embedded model's tokenizer (beside the wheels), or the embedded model itself."""
    for candidate in (HERE / "wheels" / "tokenizer", HERE / "gpu_assets" / "tokenizer"):
        if (candidate / "tokenizer_config.json").is_file():
            return candidate
    from studio.models import embedded_dir

    return embedded_dir()


def train_table(cuda: bool, model_dir: Path, work: Path) -> None:
    """(b): train_throughput.py on the random model, LoRA and QLoRA."""
    runs = ([("lora", "trl,trl+liger,studio,studio+chunked"), ("qlora", "trl,studio,studio+chunked")] if cuda
            else [("lora", "trl,studio,studio+chunked")])
    seq, epochs = ("2048", "3") if cuda else ("256", "1")
    # the CPU path shows the table works (a few steps of 4 rows, one thread each), within the suite's 2 minutes
    smaller = [] if cuda else ["--every", "12", "--threads", "1"]
    for method, only in runs:
        print(f"\n## (b) training throughput, {method}, max_seq_len {seq}\n", flush=True)
        cmd = [sys.executable, str(HERE / "train_throughput.py"), "--model-dir", str(model_dir), "--method", method,
               "--max-seq-len", seq, "--epochs", epochs, "--only", only, "--precision", "bf16", *smaller]
        subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _adapter_run(model_dir: Path, root: Path) -> Path:
    """A run folder with a LoRA adapter on ``model_dir`` (small random B, so it changes answers)."""
    from studio import models
    from studio.config import ModelSpec

    spec = MethodSpec("lora", {"r": 8, "targets": ["attention"]})
    cfg = RunConfig(model=ModelSpec(id=str(model_dir)), method=spec)
    model, _ = models.load(cfg.model)
    model = methods.get("lora").apply(model, spec, methods.Context())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)).to(p) * 0.02)
    run = root / "suite-lora"
    methods.save_result(model, spec, run / "adapter")
    cfg.save(run / "config.yaml")
    models.forget_cache()
    return run


def _stream(engine, panes, prompt: str, tokens: int) -> tuple[float | None, float, int]:
    from studio.chat_stream import GenSettings

    start, first = time.perf_counter(), None
    for texts in engine.stream([{"role": "user", "content": prompt}], panes=panes,
                               gen=GenSettings(max_new_tokens=tokens, greedy=True)):
        if first is None and any(texts.values()):
            first = time.perf_counter() - start
    return first, time.perf_counter() - start, sum(len(t) for t in engine.last_tokens.values())


def chat_table(cuda: bool, model_dir: Path, work: Path) -> None:
    """(c): time to first token and tokens/s for one pane and for two panes in one batch."""
    from studio.chat import ChatEngine
    from studio.config import ModelSpec

    run = _adapter_run(model_dir, work)
    engine = ChatEngine(ModelSpec(id=str(model_dir)))
    engine.add_adapter("tuned", run)
    tokens, repeats = (128, 3) if cuda else (16, 2)
    print(f"\n## (c) chat, greedy, {tokens} new tokens, medians of {repeats}\n")
    print("| panes | time to first token | tokens/s, all panes |")
    print("|---|---:|---:|")
    for label, panes in (("one (tuned)", ["tuned"]), ("two (base + tuned, one batch)", [None, "tuned"])):
        _stream(engine, panes, "Hello", 4)  # warm-up
        ttft = [t for t in (_stream(engine, panes, "Who are you?", 8)[0] for _ in range(repeats)) if t is not None]
        speed = [n / s for _, s, n in (_stream(engine, panes, "Write a story about a robot.", tokens)
                                        for _ in range(repeats))]
        print(f"| {label} | {statistics.median(ttft):.3f} s | {statistics.median(speed):.1f} |", flush=True)
