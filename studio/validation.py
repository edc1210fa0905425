"""Checking a RunConfig against the method registry: the knobs of ``method`` and how they combine.

``studio.config`` checks each field against its own range and stays the ground floor; this module adds what
needs the registry, and is what every face uses to read user input (a preset, ``--set`` assignments, the
UI's form, pasted YAML). Every problem comes back at once, one readable line each.

    cfg = validation.load("presets/quickstart.yaml")                 # ConfigError listing every problem
    cfg = validation.with_overrides(cfg, ["method.r=16", "train.max_steps=20"])
    found = validation.problems(cfg)                                 # [] when valid
"""

from __future__ import annotations

from pathlib import Path

from studio import methods, objectives, rewards
from studio.config import ConfigError, RunConfig

__all__ = ["problems", "validate", "from_dict", "from_yaml", "load", "with_overrides"]


def problems(cfg: RunConfig) -> list[str]:
    """Every problem with ``cfg``'s values, its fields' ranges, its method's and its objective's knobs."""
    found = (cfg.problems() + methods.check_spec(cfg.method, "method")
             + objectives.check_spec(cfg.train.objective, "train.objective"))
    return found + _reward_problems(cfg, found)


def _reward_problems(cfg: RunConfig, found: list[str]) -> list[str]:
    """An online objective's (GRPO's) rewards and batch, once its own knobs are valid."""
    objective = _known_objective(cfg.train.objective.name)
    if objective is None or not objective.online or any(p.startswith("train.objective") for p in found):
        return []
    out = rewards.check(cfg.train.rewards, lambda path: (Path(path) / "config.json").is_file())
    method = _known_method(cfg.method.name)
    if method is not None:
        out += rewards.batch_problems(cfg.train.micro_batch_size, cfg.train.grad_accum,
                                      objective.values(cfg.train.objective), method.fmt, method.name)
    return out


def validate(cfg: RunConfig) -> RunConfig:
    """Raise ConfigError listing every problem at once; return ``cfg`` when valid."""
    found = problems(cfg)
    if found:
        raise ConfigError(found)
    return cfg


def from_dict(data: dict | None) -> RunConfig:
    """A checked RunConfig from a mapping (ConfigError with every problem)."""
    return validate(RunConfig.parse(data))


def from_yaml(text: str, source: str = "config") -> RunConfig:
    """A checked RunConfig from YAML text; ``source`` names it in messages."""
    return validate(RunConfig.parse_yaml(text, source))


def load(path: str | Path) -> RunConfig:
    """A checked RunConfig from a YAML file (a preset, or a run folder's config.yaml)."""
    return validate(RunConfig.parse_yaml(RunConfig.read(path), str(path)))


def with_overrides(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """A checked copy of ``cfg`` with ``section.key=value`` assignments applied, method knobs typed by the knob."""
    changed, found = cfg.apply_overrides(assignments)
    method = _known_method(changed.method.name)
    for key in _method_keys(assignments):
        if method is not None and key in changed.method.knobs and key in method.defaults():
            changed.method.knobs[key] = method.knob(key).coerce(changed.method.knobs[key])
    objective = _known_objective(changed.train.objective.name)
    for key, value in changed.train.objective.knobs.items():  # typed by the knob (1 -> 1.0)
        if objective is not None and key in objective.defaults():
            changed.train.objective.knobs[key] = objective.knob(key).coerce(value)
    found += [p for p in problems(changed) if p not in found]
    if found:
        raise ConfigError(found)
    return changed


def _known_method(name: str):
    try:
        return methods.get(name)
    except ConfigError:
        return None  # reported by problems()


def _known_objective(name: str):
    try:
        return objectives.get(name)
    except ConfigError:
        return None  # reported by problems()


def _method_keys(assignments: list[str]) -> list[str]:
    keys = []
    for item in assignments:
        section, _, rest = item.partition("=")[0].strip().partition(".")
        if section == "method" and rest and rest != "name":
            keys.append(rest)
    return keys
