"""The contenders of benchmarks/train_throughput.py, each run in its own process by that script.

    python benchmarks/throughput_contenders.py recipe|trl|studio SETTINGS.json   # prints one JSON line

Every contender trains through transformers' Trainer, so one callback (Meter) measures all of them the
same way: seconds from on_train_begin to on_train_end, the peak memory during that loop (the process's
resident set sampled every 5 ms on a CPU; torch.cuda.max_memory_allocated on a GPU), Trainer's
``train_loss`` (the mean of the per-step losses), and, after the clock has stopped, the trained model's
loss over every conversation of the data, each on its own (``loss_after``: the same tokens for every
contender, whatever rows its packing made and in whatever order it saw them). The recipe is run unchanged
(runpy), with the Meter added to its Trainer's callbacks from outside.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import sys
import threading
import time
from pathlib import Path

import psutil
import torch
from transformers import Trainer, TrainerCallback

ROOT = Path(__file__).resolve().parent.parent


class Meter(TrainerCallback):
    """Times the training loop and samples peak memory inside it; then scores the trained model."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.seconds = self.loss = self.loss_after = None
        self.rss_start = self.peak_rss = self.peak_cuda = 0
        self._stop = threading.Event()
        self._thread = None

    def _sample(self):
        proc = psutil.Process()
        while not self._stop.wait(0.005):  # a step's logits live for well over 5 ms
            self.peak_rss = max(self.peak_rss, proc.memory_info().rss)

    def on_train_begin(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.rss_start = self.peak_rss = psutil.Process().memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()

    def on_train_end(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.peak_cuda = torch.cuda.max_memory_allocated()
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.loss = next((h["train_loss"] for h in reversed(state.log_history) if "train_loss" in h), None)
        self.steps = state.global_step
        self.loss_after = loss_after(kw["model"], self.settings)

    def report(self, name: str, tokens: int) -> dict:
        return {"contender": name, "steps": self.steps, "real_tokens": tokens, "train_seconds": round(self.seconds, 3),
                "real_tokens_per_second": round(tokens / self.seconds, 2), "mean_loss": round(self.loss, 4),
                "loss_after": round(self.loss_after, 4),
                "peak_rss_mib": round(self.peak_rss / 2**20, 1),
                "train_rss_growth_mib": round((self.peak_rss - self.rss_start) / 2**20, 1),
                "peak_cuda_mib": round(self.peak_cuda / 2**20, 1) if self.peak_cuda else None}


def conversation_ids(path: Path, model_dir: Path, max_len: int) -> list[list[int]]:
    """Every conversation of the .jsonl at ``path`` as the recipe renders it (the model's chat template), cut
    to ``max_len`` tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [tok(tok.apply_chat_template(r["messages"], tokenize=False))["input_ids"][:max_len] for r in rows]


@torch.no_grad()
def loss_after(model, s: dict) -> float:
    """The trained model's mean loss per predicted token over every conversation, one at a time.

    Every token counts (the runs here train on all of them), each row cut to max_seq_len, computed in the
    contender's own precision (bf16 autocast, or fp32 for the recipe) in eval mode.
    """
    device = next(model.parameters()).device
    bf16 = s.get("recipe") is None and s["precision"] == "bf16"
    was_training, total, count = model.training, 0.0, 0
    model.eval()
    for ids in conversation_ids(Path(s["data"]), Path(s["model_dir"]), s["max_seq_len"]):
        ids = torch.tensor([ids], device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        total, count = total + loss.item() * (ids.shape[1] - 1), count + ids.shape[1] - 1
    model.train(was_training)
    return total / count


def run_recipe(s: dict) -> dict:
    """The tutorial recipe as it is, with the Meter slipped into its Trainer."""
    meter, init = Meter(s), Trainer.__init__

    def with_meter(self, *a, **kw):
        kw["callbacks"] = [*(kw.get("callbacks") or []), meter]
        init(self, *a, **kw)

    Trainer.__init__ = with_meter
    sys.argv = [s["recipe"], "--data", s["data"], "--model", s["model_dir"], "--rank", "8", "--alpha", "16",
                "--targets", "q_proj,v_proj", "--max-length", str(s["max_seq_len"]), "--batch", str(s["recipe_batch"]),
                "--epochs", str(s["recipe_epochs"]), "--lr", "3e-4", "--out", s["work"] + "/recipe-out"]
    lines = _capture(lambda: runpy.run_path(s["recipe"], run_name="__main__"))
    own = json.loads([ln for ln in lines if ln.startswith("{")][-1])
    tokens = round(own["real_tokens_per_epoch"] * s["recipe_epochs"])
    return meter.report("recipe (fp32, padded)", tokens)


def _capture(fn) -> list[str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn()
    return buf.getvalue().splitlines()


def run_trl(s: dict) -> dict:
    """TRL's SFTTrainer as its docs show it: packing (best-fit, padding-free rows), same LoRA and settings."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    sys.path.insert(0, str(ROOT))
    from studio.models import pick_dtype

    tok = AutoTokenizer.from_pretrained(s["model_dir"])
    dtype = pick_dtype("auto")  # as the studio loads
    if s.get("method") == "qlora":  # NF4 with double quantisation, computing in bf16: QLoRA's recipe
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(s["model_dir"], dtype=torch.bfloat16, quantization_config=quant)
    else:
        model = AutoModelForCausalLM.from_pretrained(s["model_dir"], dtype=dtype)
        if torch.cuda.is_available():
            model = model.to("cuda")
    bf16 = s["precision"] == "bf16"
    cfg = SFTConfig(output_dir=s["work"] + "/trl-out", per_device_train_batch_size=1, num_train_epochs=s["epochs"],
                    learning_rate=3e-4, lr_scheduler_type="linear", warmup_steps=0, max_length=s["max_seq_len"],
                    packing=True, padding_free=True, bf16=bf16, fp16=False, seed=0, logging_steps=1,
                    save_strategy="no", report_to=[], dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
                    activation_checkpointing=False,  # TRL defaults to on; the studio's runs here have it off
                    use_liger_kernel=s.get("liger", False), disable_tqdm=True)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=s.get("targets", ["q_proj", "v_proj"]),
                      task_type="CAUSAL_LM")
    data = load_dataset("json", data_files=s["data"], split="train")
    meter = Meter(s)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok, peft_config=lora,
                         callbacks=[meter])
    tokens_per_epoch = sum(len(r) for r in trainer.train_dataset["input_ids"])
    trainer.train()
    return meter.report("TRL SFTTrainer" + (" + Liger" if s.get("liger") else ""), round(tokens_per_epoch * s["epochs"]))


def run_studio(s: dict) -> dict:
    """``python -m studio train``'s job, in this process, with the Meter among its callbacks."""
    sys.path.insert(0, str(ROOT))
    from studio import training
    from studio.config import RunConfig

    train = {"epochs": float(s["epochs"]), "micro_batch_size": 1, "max_seq_len": s["max_seq_len"],
             "learning_rate": 3e-4, "scheduler": "linear", "warmup_ratio": 0.0, "precision": s["precision"], "seed": 0,
             "output_dir": s["work"] + "/runs", "run_name": re.sub(r"[^A-Za-z0-9._-]+", "-", s["name"]),
             "save_steps": 100_000, "sample_hardware": False}
    lever = s.get("sections", {})  # the contender's changes: a lever on, or off
    cfg = RunConfig.from_dict({
        "model": {"id": s.get("model_id", "embedded"), **lever.get("model", {})},
        "method": {"name": s.get("method", "lora"), "r": 8, "alpha": 16.0, "dropout": 0.0,
                   "targets": s.get("targets", ["q_proj", "v_proj"])},
        "data": {"path": s["data"], "train_on": "all", "packing": True, **lever.get("data", {})},
        "train": {**train, **lever.get("train", {})}})
    meter = Meter(s)
    job = training.TrainingJob(cfg, callbacks=(meter,)).start()
    job.wait()
    if job.state != "done":
        raise SystemExit(f"studio run failed: {job.snapshot().get('message')}")
    return meter.report(s["name"], int(job.snapshot()["tokens"]))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = json.loads(Path(sys.argv[2]).read_text())
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    torch.manual_seed(0)
    result = {"recipe": run_recipe, "trl": run_trl, "studio": run_studio}[sys.argv[1]](settings)
    print(json.dumps(result), flush=True)
