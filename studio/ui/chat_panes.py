"""The app's one chat engine, opened on runs picked in the browser (shared by the Chat tab and its Evaluate
accordion): the typed folders are checked against the allowed ones, then ``studio.chat_session`` serves them
from the engine kept in the app's state."""

from __future__ import annotations

from studio import chat_session
from studio.chat import ChatEngine
from studio.ui import paths, state

__all__ = ["open_panes", "engine_for"]


def open_panes(model_id: str, runs: list[str | None]) -> tuple[ChatEngine, list[str | None], list[str]]:
    """``chat_session.open_panes`` on the app's engine, for runs in the runs folder and an allowed model.

    Args:
        model_id: the base model when no run is given.
        runs: run folders, one per pane (None: an empty pane); the first one given picks the base model.

    Returns:
        (engine, adapter name per run or None where it cannot answer, note lines).
    """
    runs = [paths.check_run_dir(r) or None for r in runs]
    return chat_session.open_panes(state.get(), paths.check_model(model_id), runs)


def engine_for(model_id: str, run_dir: str | None) -> tuple[ChatEngine, str | None]:
    """The app's chat engine for the run's base (or ``model_id``), with the run's adapter loaded.

    Returns:
        (engine, adapter name or None). A different base model replaces the engine (one copy at a time).
    """
    engine, names, _ = open_panes(model_id, [run_dir])
    return engine, names[0]
