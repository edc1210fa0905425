"""Experiment trackers (``train.report_to``) through transformers' own Trainer integrations.

Each tracker logs into the run folder by default, so nothing leaves the machine unless asked:

    tensorboard   runs/<name>/tensorboard/   event files (``tensorboard --logdir runs``)
    mlflow        runs/<name>/mlruns/        a local MLflow file store (``mlflow ui --backend-store-uri ...``)
    wandb         runs/<name>/wandb/         offline (``wandb sync`` uploads it later), unless WANDB_MODE is set
    trackio       runs/<name>/trackio/       trackio's local store, unless TRACKIO_DIR is set

The packages are optional extras: a missing one is one line from the preflight and the run does not start.
The studio's own metrics.jsonl stays the source of its charts.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["TRACKERS", "problems", "callbacks"]

TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio", "wandb": "wandb"}
"""train.report_to -> the module it needs"""

_INSTALL = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny", "trackio": "trackio", "wandb": "wandb"}


def problems(report_to: str) -> list[str]:
    """One line when the tracker's package is not installed ([] for none or when it is)."""
    module = TRACKERS.get(report_to)
    if module is None or importlib.util.find_spec(module) is not None:
        return []
    return [f"train.report_to: {report_to} is not installed (pip install {_INSTALL[report_to]}), "
            f"or set train.report_to=none"]


def callbacks(report_to: str, run_dir: str | Path) -> list:
    """The Trainer callbacks that log to ``report_to`` inside ``run_dir`` ([] for none)."""
    run_dir = Path(run_dir)
    if report_to == "tensorboard":
        from transformers.integrations import TensorBoardCallback

        board = TensorBoardCallback()
        board.logging_dir = str(run_dir / "tensorboard")  # its writer opens there on the main process only
        return [board]
    if report_to == "mlflow":
        return [_mlflow_callback(run_dir / "mlruns")]
    if report_to == "wandb":
        from transformers.integrations import WandbCallback

        # wandb reads these when the run begins; a person's own setting (e.g. WANDB_MODE=online) wins
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ["WANDB_DIR"] = str(run_dir)
        return [WandbCallback()]
    if report_to == "trackio":
        from transformers.integrations import TrackioCallback

        os.environ.setdefault("TRACKIO_DIR", str(run_dir / "trackio"))
        return [TrackioCallback()]
    return []


def _mlflow_callback(store: Path):
    """transformers' MLflowCallback, pointed at a file store in the run folder for this run only."""
    from transformers.integrations import MLflowCallback

    class _RunFolderMLflow(MLflowCallback):
        def setup(self, args, state, model):
            if state.is_world_process_zero:
                # set here, not through MLFLOW_TRACKING_URI: the environment is the whole process's, and the
                # next run in it has another folder
                self._ml_flow.set_tracking_uri(store.resolve().as_uri())
                # MLflow 3 keeps the file store but asks for an opt-in; a folder needs no database to read
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            super().setup(args, state, model)

    return _RunFolderMLflow()
