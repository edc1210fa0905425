"""The app-level object that holds live things: the current training job and the chat engine.

These live here, not in ``gr.State``: Gradio deep-copies State values per session, and a model or a
running job must be one shared object that every browser tab sees (a page reload picks it back up).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AppState", "get", "configure"]


@dataclass
class AppState:
    """Live objects shared by every session of one studio process."""

    default_model: str = "embedded"
    """model.id preselected on the Model tab"""
    runs_root: Path = Path("runs")
    """folder that holds the run folders (listed on the Runs tab, written by training)"""
    job: Any = None
    """the TrainingJob started from this UI (also found through training.current_job())"""
    chat: Any = None
    """the ChatEngine: one copy of the base weights, adapters added as runs are picked"""
    chat_key: tuple | None = None
    """which base model the chat engine holds, so a model change builds a new one"""
    form: Any = None
    """the Form of the last app built (its widgets in RunConfig order), for tests and the API"""
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATE = AppState()


def get() -> AppState:
    """The process's AppState."""
    return _STATE


def configure(default_model: str | None = None, runs_root: str | Path | None = None) -> AppState:
    """Set the defaults the app is built with (model preselected, runs folder)."""
    if default_model:
        _STATE.default_model = default_model
    if runs_root:
        _STATE.runs_root = Path(runs_root)
    return _STATE
