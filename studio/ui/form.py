"""Widgets generated from the config's field metadata and the registry's knobs, and the Form that
turns their values into a RunConfig (and a RunConfig back into widget values).

Every number is a slider or a number field built from the field's own range, and every tooltip is the
field's own help text: the config and the method registry are the one source of both.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from studio import methods, objectives, validation
from studio.config import ConfigError, MethodSpec, RunConfig, Setting, TrainSpec, setting
from studio.ui import paths

__all__ = ["Form", "setting_widget", "field_widget", "layer_widgets", "OPTIONAL_ZERO", "LAYERS", "OBJECTIVE_KNOB"]

# A slider is only useful when its whole range is a few thousand steps; wider ranges get a number field.
_MAX_SLIDER_STEPS = 2000
OPTIONAL_ZERO = "0: not set"
# Form key suffix of a layer knob's second widget: knob:lora:targets holds the groups, knob:lora:targets:layers
# the layer names; the two merge into one method.targets list.
LAYERS = "layers"
# Form key prefix of an objective's knob: objknob:dpo:beta (only the chosen objective's go into the config)
OBJECTIVE_KNOB = "objknob"


def _base_type(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _number_widget(kind: type, value: Any, lo: float | None, hi: float | None, step: float | None,
                   **kw) -> gr.components.Component:
    precision = 0 if kind is int else None
    if lo is not None and hi is not None:
        # floats without a declared step slide only over short ranges (fractions); alpha 0..4096 gets a field
        step = step or (1 if kind is int else ((hi - lo) / 100 if hi - lo <= 1 else None))
        if step and (hi - lo) / step <= _MAX_SLIDER_STEPS:
            return gr.Slider(lo, hi, value=value, step=step, precision=precision, **kw)
    return gr.Number(value=value, minimum=lo, maximum=hi, step=step or (1 if kind is int else None),
                     precision=precision, **kw)


def setting_widget(item: Setting, value: Any = None, names: list[str] | None = None,
                   **kw) -> gr.components.Component:
    """A widget for one setting (a config field or a method knob), typed and ranged by the setting itself.

    Booleans are checkboxes, choices dropdowns, numbers sliders or number fields, lists checkbox groups
    (their choices, or ``names`` read from the model). Optional numbers (``int | None``) show 0 for
    "not set"; ``Form.to_config`` maps 0 back to None.
    """
    kind, optional = item.kind, item.optional
    value = item.default if value is None else value
    kw.setdefault("label", item.name.replace("_", " "))
    kw.setdefault("info", item.help + (f" ({OPTIONAL_ZERO})" if optional and kind in (int, float) else ""))
    if kind is bool:
        return gr.Checkbox(value=value, **kw)
    if kind is list:
        choices = list(item.choices) if item.choices else list(names or [])
        choices += [v for v in value or [] if v not in choices]
        return gr.CheckboxGroup(choices, value=list(value or []), **kw)
    if item.choices:
        return gr.Dropdown(list(item.choices), value=value, **kw)
    if kind in (int, float):
        lo, hi = (0 if optional else item.min), item.max
        if kind is float and item.min and hi is not None and item.min < (hi - lo) / 100:
            hi = None  # valid values finer than a slider step (a learning rate of 1e-4): a number field
        return _number_widget(kind, 0 if value is None else value, lo, hi, item.step, **kw)
    return gr.Textbox(value="" if value is None else str(value), **kw)


def field_widget(section: type, name: str, value: Any = None, **kw) -> gr.components.Component:
    """``setting_widget`` for the config field ``section.name`` (``field_widget(TrainSpec, "epochs")``)."""
    return setting_widget(setting(section, name), value, **kw)


def layer_widgets(knob: Setting, groups: list[str], names: list[str], elem_id: str) -> tuple:
    """Two checkbox groups for a knob that picks the model's layers: the groups (attention, mlp, all-linear...)
    under ``elem_id``, then the model's own layer names under ``elem_id-layers``. Their values are merged
    into one list (``Form.to_config``)."""
    default = list(knob.default or [])
    label = knob.name.replace("_", " ")
    grouped = gr.CheckboxGroup(list(groups), value=[v for v in default if v in groups], label=f"{label}: groups",
                               info=knob.help, elem_id=elem_id)
    layers = gr.CheckboxGroup(list(names) + [v for v in default if v not in groups and v not in names],
                              value=[v for v in default if v not in groups], label=f"{label}: layers",
                              info="the model's own layer names, as read from the model", elem_id=f"{elem_id}-{LAYERS}")
    return grouped, layers


@dataclass
class Form:
    """The ordered widgets that make up a RunConfig.

    Keys are ``section.field`` (``train.distributed.strategy`` for nested ones) or ``knob:METHOD:NAME``
    for a method knob; only the selected method's knobs go into the config. A mapping field gets one
    widget per entry (``data.columns.instruction``); an empty widget leaves its entry out.
    """

    keys: list[str] = field(default_factory=list)
    components: list = field(default_factory=list)

    def add(self, key: str, component) -> Any:
        self.keys.append(key)
        self.components.append(component)
        return component

    def index(self, key: str) -> int:
        return self.keys.index(key)

    def to_config(self, *values) -> RunConfig:
        """A validated RunConfig from the widget values, in ``components`` order (ConfigError if bad).

        Paths typed in the browser must lie under an allowed folder (studio.ui.paths.PathRefused if not).
        """
        if len(values) != len(self.keys):
            raise ConfigError(f"the form has {len(self.keys)} settings, got {len(values)} values")
        data: dict = {"model": {}, "method": {}, "data": {}, "train": {}}
        method = values[self.index("method.name")] if "method.name" in self.keys else MethodSpec().name
        objective = values[self.index("train.objective.name")] if "train.objective.name" in self.keys else "sft"
        for key, value in zip(self.keys, values):
            if key.startswith(f"{OBJECTIVE_KNOB}:"):
                _, owner, name = key.split(":", 2)
                if owner == objective:
                    knob = objectives.get(owner).knob(name)
                    data["train"].setdefault("objective", {})[name] = _clean_knob(knob, value)
                continue
            if key.startswith("knob:"):
                _, owner, name = key.split(":", 2)
                name, _, part = name.partition(":")
                if owner == method:
                    value = _clean_knob(methods.get(owner).knob(name), value)
                    # a layer knob's second widget (its layer names) adds to what the first (groups) holds
                    data["method"][name] = data["method"].get(name, []) + value if part == LAYERS else value
                continue
            path = key.split(".")
            if _is_entry(path) and value in ("", None):
                continue
            node = data
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = _clean_field(path, value)
        return paths.check_config(validation.from_dict(data))

    def from_config(self, cfg: RunConfig) -> list:
        """Widget values for ``cfg``, in ``components`` order (knobs of other methods are left alone)."""
        flat = cfg.to_dict()
        out = []
        for key in self.keys:
            if key.startswith("knob:"):
                out.append(self._knob_value(key, cfg))
                continue
            if key.startswith(f"{OBJECTIVE_KNOB}:"):
                _, owner, name = key.split(":", 2)
                spec = cfg.train.objective
                out.append(objectives.get(owner).values(spec)[name] if owner == spec.name else gr.update())
                continue
            node: Any = flat
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            out.append("" if node is None and _is_entry(key.split(".")) else _show(node))
        return out


    def _knob_value(self, key: str, cfg: RunConfig) -> Any:
        """A knob widget's value for ``cfg``; a split layer knob shows its groups and its names apart."""
        from studio.targets import GROUPS

        _, owner, name = key.split(":", 2)
        name, _, part = name.partition(":")
        if owner != cfg.method.name:
            return gr.update()
        value = methods.get(owner).values(cfg.method)[name]
        if part == LAYERS:
            return [v for v in value if v not in GROUPS]
        if f"{key}:{LAYERS}" in self.keys:
            return [v for v in value if v in GROUPS]
        return value


def _show(value: Any) -> Any:
    """A config value as its widget shows it (None as 0 or empty)."""
    if value is None:
        return 0
    return value


def _optional_hint(path: list[str]) -> tuple[bool, type | None]:
    from studio.config import DataSpec, DistributedSpec, ModelSpec

    sections = {"model": ModelSpec, "data": DataSpec, "train": TrainSpec, "distributed": DistributedSpec}
    section = sections.get(path[-2]) if len(path) >= 2 else None
    if section is None:
        return False, None
    hint = typing.get_type_hints(section).get(path[-1])
    return type(None) in typing.get_args(hint), _base_type(hint)


def _is_entry(path: list[str]) -> bool:
    """Whether ``path`` names one entry of a mapping field (data.columns.instruction), not a field."""
    return len(path) > 2 and _optional_hint(path[:-1])[1] is dict


def _clean_field(path: list[str], value: Any) -> Any:
    """Widget value -> config value: 0 or empty means None for optional fields; ints stay ints."""
    optional, kind = _optional_hint(path)
    if optional and (value in (0, "", None)):
        return None
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return value.strip()
    return value


def _clean_knob(knob: Setting, value: Any) -> Any:
    if knob.type is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if knob.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if knob.type is list:
        return list(value or [])
    return value
