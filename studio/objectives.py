"""The objectives facade: every registered training objective (``studio/objective_defs.py``) and its API.

    obj = objectives.get(cfg.train.objective.name)
    if obj.preference: ...          # trained through its TRL trainer (studio/preference_train.py)
"""

from __future__ import annotations

from studio import objective_defs  # noqa: F401  - the definitions register themselves on import
from studio.objective_api import Objective, all_objectives, check_spec, get, names, register

__all__ = ["Objective", "register", "get", "names", "all_objectives", "check_spec"]
