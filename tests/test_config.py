"""RunConfig: YAML round trip, typed overrides, every problem reported at once, every preset loads."""

from pathlib import Path

import pytest

from studio import validation
from studio.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = RunConfig().validate()
    path = cfg.save(tmp_path / "run.yaml")
    again = RunConfig.load(path)
    assert again.to_dict() == cfg.to_dict()


def test_set_overrides_are_typed_by_the_dataclass():
    cfg = validation.with_overrides(RunConfig(), ["train.learning_rate=1e-4", "train.max_steps=20", "method.r=16",
                                                     "method.targets=q_proj,v_proj", "data.packing=false",
                                                     "train.distributed.strategy=fsdp"])
    assert cfg.train.learning_rate == pytest.approx(1e-4) and isinstance(cfg.train.learning_rate, float)
    assert cfg.train.max_steps == 20 and cfg.method.knobs["r"] == 16
    assert cfg.method.knobs["targets"] == ["q_proj", "v_proj"]
    assert cfg.data.packing is False and cfg.train.distributed.strategy == "fsdp"


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        validation.with_overrides(RunConfig(), ["method.r=0", "train.micro_batch_size=0", "method.nope=3", "model.dtype=int3"])
    text = "\n".join(err.value.problems)
    for key in ("method.r", "train.micro_batch_size", "method.nope", "model.dtype"):
        assert key in text
    assert len(err.value.problems) == 4


@pytest.mark.parametrize("yaml_text, needle", [
    ("model: [", "not valid YAML at line"),
    ("trian: {}", "trian: unknown section"),
    ("train: {epochs: fast}", "train.epochs: expected float"),
    ("train: {lr: 0.1}", "train.lr: unknown key (allowed:"),
    ("method: {name: magic}", "unknown method 'magic'"),
    ("train: {learning_rate: 0}", "learning_rate: 0.0 is below the minimum"),
    ("train: {learning_rate: 5}", "learning_rate: 5.0 is above the maximum"),
    ("data: {format: xml}", "data.format: 'xml' is not one of"),
    ("- just\n- a list", "a run config is a mapping"),
])
def test_bad_yaml_gets_one_clear_line(yaml_text, needle):
    with pytest.raises(ConfigError) as err:
        validation.from_yaml(yaml_text, "preset.yaml")
    assert any(needle in p for p in err.value.problems), err.value.problems


def test_set_needs_section_key_value():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        RunConfig().with_overrides(["max_steps=3"])


@pytest.mark.parametrize("preset", sorted((ROOT / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_loads_and_names_its_data(preset):
    cfg = validation.load(preset)
    assert preset.read_text().startswith("#"), "a preset starts with a comment saying what it is for"
    data = Path(cfg.data.path)
    if not data.is_absolute() and cfg.data.path.startswith("presets/"):
        assert (ROOT / data).exists(), f"{preset.name} names missing data {cfg.data.path}"
