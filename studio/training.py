"""TrainingJob: a transformers Trainer in a background thread, with a progress snapshot, events, stop and resume.

The shape is small on purpose: setup (model, method, data), train, save, cleanup. What a job publishes
(events, the progress snapshot, train.log, state.json) is its RunLog (studio/run_log.py); the UI and the
CLI only start a job and read that::

    job = TrainingJob(cfg).start()
    seen = 0
    while not job.wait(1.0):
        for event in job.events(seen):      # never blocks the trainer
            seen = event["index"] + 1
        print(job.snapshot())                # a small dict: state, step, total, eta, loss, tokens/s, memory
    job.stop()                               # ends at the next step; what was trained is saved
    TrainingJob.resume(job.run_dir)          # continues from the last checkpoint

One job runs per process at a time. The thread is not a daemon, so a process (the UI server) keeps
it going when the browser that started it goes away.
"""

from __future__ import annotations

import gc
import os
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, TrainerState, set_seed
from transformers.trainer_utils import TrainOutput

from studio import (base_guard, checkpoints, data, faults, forgetting, grpo_train, methods, models, objectives,
                    preference_train, preflight, process, run_log, runs, start_from, trackers, validation)
from studio.config import ConfigError, RunConfig
from studio.faults import OutOfMemory, TrainingError
from studio.hw_sampler import HardwareSampler
from studio.run_log import RunLog
from studio.status import RunStatus
from studio.train_parts import (
    EarlyStop,
    StudioTrainer,
    TokenCountingCollator,
    build_args,
    Progress,
    total_steps,
    train_batches,
)

__all__ = ["TrainingError", "OutOfMemory", "TrainingJob", "current_job"]


_slot = threading.Lock()
_current: "TrainingJob | None" = None


def current_job() -> "TrainingJob | None":
    """The process's most recent job (running or finished), or None."""
    return _current


class TrainingJob:
    """One training run of a RunConfig, in a background thread.

    Args:
        cfg: the run's configuration (validated here).
        callbacks: extra transformers TrainerCallbacks (the UI and tests hook in here).
        run_dir: an existing run folder to continue (set by ``resume``).
    """

    def __init__(self, cfg: RunConfig, *, callbacks: tuple = (), run_dir: str | Path | None = None):
        self.cfg = validation.validate(cfg)
        self.name = runs.sanitize_name(cfg.train.run_name or f"{cfg.method.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.log = RunLog(self.name)
        """what the job publishes: events, the progress snapshot, train.log and state.json"""
        self.log.run_dir = Path(run_dir) if run_dir else None
        self.model: Any = None
        self.tokenizer: Any = None
        self.error: BaseException | None = None
        self.result: dict = {}
        self._resume = run_dir is not None
        self._callbacks = tuple(callbacks)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trainer: Any = None

    # ---- public surface -------------------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir: str | Path, *, start: bool = True, callbacks: tuple = ()) -> "TrainingJob":
        """A job that continues ``run_dir`` from its last checkpoint (optimizer and scheduler state too).

        Raises:
            ConfigError: the folder has no config.yaml or no complete checkpoint.
        """
        run_dir = Path(run_dir)
        cfg = RunConfig.load(run_dir / "config.yaml")
        if runs.last_checkpoint(run_dir) is None:
            raise ConfigError(f"{run_dir}: no checkpoint to resume from (train.save_steps sets how often one is made)")
        job = cls(cfg, callbacks=callbacks, run_dir=run_dir)
        job.name = run_dir.name
        return job.start() if start else job

    def start(self) -> "TrainingJob":
        """Start the background thread; refuses while another job in this process is going.

        Raises:
            ConfigError: another job is going, or the preflight found settings this model or machine cannot
                take (every problem at once; no run folder is made).
        """
        global _current
        with _slot:
            if _current is not None and _current.running:
                raise ConfigError(f"a run is already going: {_current.name}")
            if self._thread is not None:
                raise ConfigError(f"this job was started already: {self.name}")
            preflight.check(self.cfg)  # settings the model or this machine cannot take, before any weights load
            self._prepare_folder()
            _current = self
            run_log.publish(self.log)
            self._thread = threading.Thread(target=self._run, name=f"train-{self.name}", daemon=False)
            self.log.set_state(RunStatus.QUEUED, "waiting to load the model")
            self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the run to end after the current step; the adapter trained so far is saved."""
        self._stop.set()
        self.log.event("message", text="stop requested")

    @property
    def run_dir(self) -> Path | None:
        """The run folder (None until ``start`` makes it, unless resuming)."""
        return self.log.run_dir

    @property
    def state(self) -> RunStatus:
        """Where the job is now (see RunStatus)."""
        return self.log.state

    @property
    def running(self) -> bool:
        """True while the thread is alive or the job has not finished yet."""
        return (self._thread is not None and self._thread.is_alive()) or self.state.working

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the job to end; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self) -> dict:
        """A copy of the small progress dict (cheap; never waits on the trainer)."""
        return self.log.snapshot()

    def events(self, since: int = 0) -> list[dict]:
        """Events with index >= ``since``: {"index", "type", "time", ...}. Many readers may follow one job."""
        return self.log.events(since)

    def retry_smaller(self, *, start: bool = True) -> "TrainingJob":
        """A new job with half the micro-batch and double the accumulation (same tokens per step).

        Raises:
            ConfigError: the micro-batch is 1 already.
        """
        t = self.cfg.train
        if t.micro_batch_size <= 1:
            raise ConfigError("train.micro_batch_size is 1 already: shorten train.max_seq_len or turn on "
                              "train.gradient_checkpointing")
        cfg = RunConfig.from_dict(self.cfg.to_dict())
        cfg.train.micro_batch_size = t.micro_batch_size // 2
        cfg.train.grad_accum = t.grad_accum * 2
        cfg.train.run_name = f"{self.name}-retry"
        job = TrainingJob(cfg, callbacks=self._callbacks)
        return job.start() if start else job

    # ---- the run --------------------------------------------------------------------------------

    def _prepare_folder(self) -> None:
        if self.run_dir is None:
            folder = runs.new_run_dir(self.cfg.train.output_dir, self.name) if process.is_main_process() else \
                Path(self.cfg.train.output_dir) / self.name
            # under torchrun every rank takes rank 0's folder (its name has rank 0's time, maybe a -2 suffix)
            self.log.run_dir = Path(process.from_rank0(str(folder)))
            self.name = self.run_dir.name
        if process.is_main_process():
            self.cfg.save(self.run_dir / "config.yaml")
        self.log.update(run_dir=str(self.run_dir), name=self.name)
        started = runs.read_state(self.run_dir).get("started") if self._resume else None
        self.log.write_state(started=started or runs.now(), finished=None, pid=os.getpid(),
                             world_size=process.world_size())

    def _run(self) -> None:
        sampler = HardwareSampler(self.run_dir, self.log) if self.cfg.train.sample_hardware and \
            process.is_main_process() else None
        try:
            if sampler is not None:
                sampler.start()
            self.log.set_state(RunStatus.LOADING, "loading the model and the data")
            trainer, checkpoint = self._setup()
            if self._stop.is_set():
                self.log.set_state(RunStatus.STOPPED, "stopped before training began", finished=runs.now())
                return
            self.log.set_state(RunStatus.TRAINING, f"resuming from {checkpoint.name}" if checkpoint else "")
            out = self._train(trainer, checkpoint)
            stopped = self._stop.is_set()
            self.log.set_state(RunStatus.SAVING, "writing the adapter")
            self._save(trainer, out)
            final = RunStatus.STOPPED if stopped else RunStatus.DONE
            self.log.set_state(final, "stopped by request; what was trained is saved" if stopped else "finished",
                               finished=runs.now())
            if not stopped and process.is_main_process():  # train.eval_after: base vs tuned, once the result is saved
                forgetting.after_training(self.run_dir, self.cfg, self.log.write_log)
        except BaseException as err:  # noqa: BLE001 - the thread must end every failure as a state
            self._fail(err)
        finally:
            if sampler is not None:
                sampler.stop()
            self._trainer = None
            if self.state is RunStatus.FAILED:
                self._release()

    def _setup(self):
        cfg, t = self.cfg, self.cfg.train
        method = methods.get(cfg.method.name)
        model_spec = methods.model_spec_for(cfg.model, cfg.method)  # QLoRA asks for a 4-bit base here
        tokenizer = models.load_tokenizer(model_spec)
        objective = objectives.get(t.objective.name)
        trl_side = grpo_train if objective.online else preference_train  # the objective's TRL trainer, if any
        prepared = trl_side.build_data(cfg, tokenizer, objective) if objective.trainer else data.build(cfg, tokenizer)
        total = total_steps(cfg, len(prepared.train) * objective.answers_per_row(t.objective))
        quality = getattr(getattr(prepared, "stats", None), "quality", None)
        if quality:  # the data quality filters' counts and examples, kept in the run folder
            self.log.write_state(data_quality=quality)
        mixed = getattr(getattr(prepared, "stats", None), "mixture", None)
        if mixed:  # each source's rows, tokens and share of the tokens, kept in the run folder
            self.log.write_state(data_mixture=mixed)
        self.log.update(total=total)
        self.log.write_state(total_steps=total)
        # a kept base is used when there is one (the UI's chat loaded it), but the run makes none: a run holds
        # only the copy it trains
        model, tokenizer = models.load(model_spec, keep=False)
        ctx = methods.Context(tokenizer=tokenizer, total_steps=total, model_spec=model_spec,
                              gradient_checkpointing=t.gradient_checkpointing,
                              batches=lambda: train_batches(prepared.train, t.micro_batch_size, tokenizer.pad_token_id),
                              progress=lambda text: self.log.set_state(RunStatus.LOADING, text))
        # the adapter's random init follows train.seed, not whatever ran before in this process; under
        # torchrun / accelerate every rank then starts from the same weights as a 1-process run would
        set_seed(t.seed)
        reference = preference_train.reference_copy(model) if preference_train.needs_reference_copy(
            objective, method) else None
        model = start_from.apply(model, cfg, ctx)  # the method, from model.adapter_from's weights when set
        if objective.trainer is None and prepared.stats.packing:
            prepared = _unpack_if_needed(cfg, tokenizer, model, prepared)
        self.model, self.tokenizer = model, tokenizer
        lr = t.learning_rate if t.learning_rate is not None else method.learning_rate
        has_eval = bool(prepared.eval)
        args = build_args(cfg, self.run_dir / "checkpoints", lr=lr, total_steps=total, has_eval=has_eval)
        progress = Progress(self.log, self._stop, self._trainer_tokens)
        # stay close to the base: the KL and EWC terms join the loss; their callbacks, first, log each term
        guard = base_guard.for_run(cfg, model, tokenizer)
        callbacks = [*(guard.callbacks() if guard else []), progress, checkpoints.CheckpointResults(cfg.method),
                     *methods.trainer_callbacks(method), *trackers.callbacks(t.report_to, self.run_dir),
                     *self._callbacks]
        if has_eval and t.early_stopping_patience:
            callbacks.append(EarlyStop(t.early_stopping_patience, self.log))
        if objective.trainer:  # the objective's TRL trainer, around the same model, callbacks and folder
            trainer = trl_side.build_trainer(cfg, objective, model, tokenizer, prepared, lr=lr,
                                             output_dir=self.run_dir / "checkpoints", total_steps=total,
                                             callbacks=callbacks, reference=reference,
                                             **({"log": self.log} if objective.online else {}))
        else:
            trainer = StudioTrainer(model=model, args=args, train_dataset=prepared.train,
                                    eval_dataset=prepared.eval or None,
                                    data_collator=TokenCountingCollator(data.Collator(tokenizer.pad_token_id)),
                                    processing_class=tokenizer, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)  # progress goes out as events, not printed dicts
        trainer.loraplus_ratio = t.loraplus_ratio
        trainer.base_guard = guard
        self._trainer = trainer
        self.log.event("setup", rows=len(prepared.train), eval_rows=len(prepared.eval), total_steps=total,
                       learning_rate=lr, stats=_stats_dict(prepared))
        checkpoint = runs.last_checkpoint(self.run_dir) if self._resume else None
        if checkpoint is not None:  # the token count goes on from where the logged rows left it
            upto = _step_of(checkpoint)
            logged = [r["tokens"] for r in runs.read_metrics(self.run_dir) if "tokens" in r and r["step"] <= upto]
            world = process.world_size()
            trainer.studio_tokens = int(logged[-1] // world) if logged else 0
        return trainer, checkpoint

    def _train(self, trainer, checkpoint: Path | None):
        """``trainer.train``, or only loading the checkpoint when it is the run's last step already.

        That happens after a kill while the final adapter was written. Resumed there, Trainer would take
        one step past max_steps before it checks; loading the checkpoint makes the final save write
        exactly what it holds. (DeepSpeed and FSDP load inside train(), so they keep that path.)
        """
        total = self.snapshot()["total"] or 0
        finished = checkpoint is not None and _step_of(checkpoint) >= total
        if not finished or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
            return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trainer._load_from_checkpoint(str(checkpoint))
        trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        world = process.world_size()
        self.log.update(step=trainer.state.global_step, loss=losses[-1] if losses else None,
                        tokens=trainer.studio_tokens * world)
        self.log.event("message", text=f"{checkpoint.name} is the last step: nothing left to train, saving it")
        # Trainer's training_loss is the mean over steps; the mean of the logged losses is that for equal intervals
        return TrainOutput(trainer.state.global_step, sum(losses) / len(losses) if losses else None, {})

    def _save(self, trainer, out) -> None:
        snap = self.snapshot()
        final_eval = snap.get("eval_loss")
        if trainer.eval_dataset is not None and not self._stop.is_set():
            final_eval = trainer.evaluate().get("eval_loss", final_eval)
        self.result = {"training_loss": out.training_loss, "final_loss": snap.get("loss"),
                       "final_eval_loss": final_eval, "train_seconds": snap.get("train_seconds"),
                       "tokens": snap.get("tokens"), "global_step": out.global_step}
        adapter = self.run_dir / "adapter"
        gathered = _save_gathered(trainer, adapter.with_name("adapter.gathered"))  # every rank, when sharded
        if not trainer.is_world_process_zero():
            return
        preference_train.drop_reference(trainer.model)
        spec = methods.method_of(trainer.model) or self.cfg.method  # model.adapter_from: the saved knobs
        if gathered is None:
            runs.replace_folder(adapter, lambda tmp: methods.save_result(trainer.model, spec, tmp))
        else:
            runs.replace_folder(adapter, lambda tmp: methods.finish_result(gathered.rename(tmp), self.cfg.method))
        runs.replace_folder(self.run_dir / "tokenizer", lambda tmp: self.tokenizer.save_pretrained(tmp))
        size = runs.folder_bytes(adapter)
        best = trainer.state.best_model_checkpoint if self.cfg.train.keep_best else None
        if best:  # train.keep_best: Trainer loaded the lowest eval loss's checkpoint back, so that is what was saved
            self.log.write_state(kept_step=_step_of(Path(best)))
            self.log.event("message", text=f"kept the best checkpoint by eval loss: {Path(best).name}")
        self.log.write_state(step=out.global_step, final_loss=snap.get("loss"), final_eval_loss=final_eval,
                             train_seconds=snap.get("train_seconds"), adapter_bytes=size,
                             peak_memory_bytes=snap.get("peak_memory_bytes"), training_loss=out.training_loss)
        runs.write_model_card(self.run_dir, self.cfg, runs.read_state(self.run_dir))

    def _fail(self, err: BaseException) -> None:
        original = err
        last = runs.last_checkpoint(self.run_dir) if self.run_dir is not None else None
        err = faults.explain(err, self.cfg.train, self.run_dir, has_checkpoint=last is not None)
        if isinstance(err, faults.DiskFull) and process.is_main_process():
            faults.drop_partial_checkpoints(self.run_dir, last)  # room for state.json, nothing half-written to resume
        message = faults.one_line(err)
        try:  # on a full disk these writes can fail too; the job must still end as failed
            detail = message if isinstance(original, ConfigError) else "".join(traceback.format_exception(original))
            self.log.write_log(detail)
        except OSError:
            pass
        original.__traceback__ = err.__traceback__ = None  # frames hold the model; dropping them lets its memory go
        self.error = err
        try:
            self.log.set_state(RunStatus.FAILED, message, finished=runs.now())
        except OSError:  # still no room for state.json: the folder reads as interrupted once this process ends
            pass

    def _trainer_tokens(self) -> int:
        """This process's real tokens so far (0 while no trainer is built)."""
        trainer = self._trainer
        return trainer.studio_tokens if trainer is not None else 0

    def _release(self) -> None:
        """Drop every reference to the model so its memory goes back (the process stays usable)."""
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ---- helpers ------------------------------------------------------------------------------------

def _save_gathered(trainer, folder: Path) -> Path | None:
    """Under FSDP or ZeRO-3, have Trainer gather the shards and write the whole result; None when unsharded.

    Every rank holds only its shard, so every rank must take part; Trainer.save_model gathers (FSDP through
    a full state dict, as PEFT documents for FSDP + LoRA; ZeRO-3 through its 16-bit weights) and writes on
    rank 0, in the same format save_result writes for PEFT and whole-model methods (bottleneck adapters are
    refused for sharded launches). Checkpoints stay sharded: only this final save gathers.
    """
    ds = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    if not (trainer.is_fsdp_enabled or ds):
        return None
    if trainer.is_world_process_zero():
        shutil.rmtree(folder, ignore_errors=True)  # left by a run killed here before
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(folder))
    return folder


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rpartition("-")[2])


def _unpack_if_needed(cfg: RunConfig, tokenizer, model, prepared):
    """Packing is only safe where the adapted model keeps packed examples apart; else pad instead."""
    problem = data.check_packing(model)
    if problem is None:
        return prepared
    plain = RunConfig.from_dict(cfg.to_dict())
    plain.data.packing = False
    prepared = data.build(plain, tokenizer)
    prepared.stats.notes.append(f"packing turned off: {problem}; batches are padded instead")
    return prepared


def _stats_dict(prepared) -> dict:
    stats = prepared.stats
    return stats.to_dict() if hasattr(stats, "to_dict") else dict(stats or {})
