import json
from dataclasses import replace
from pathlib import Path

import pytest

from slm.config import PRESETS, ModelConfig, get_preset, load_seed_config
from slm.errors import ConfigError
from slm.model import SLM

SEED = Path(__file__).resolve().parent.parent / "data" / "original_slm_config.json"
ORIGINAL_SLM_PARAMETERS = 63_037_440


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_with_the_predicted_parameter_count(name: str) -> None:
    config = PRESETS[name].model
    assert SLM(config).num_parameters() == config.num_parameters()


def test_standard_model_matches_the_original_slm_within_half_a_percent() -> None:
    config = get_preset("slm-63m").model
    assert (config.d_model, config.n_head) == (512, 8)
    assert abs(config.num_parameters() / ORIGINAL_SLM_PARAMETERS - 1) < 0.005


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="slm-63m"):
        get_preset("slm-70b")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_model": 100, "n_head": 8}, "divisible"),
        ({"n_experts": 1}, "n_experts"),
        ({"n_experts": 4, "top_k": 5}, "top_k"),
        ({"dropout": 1.5}, "dropout"),
        ({"n_layer": 0}, "n_layer"),
    ],
)
def test_invalid_model_configs_name_the_problem(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        replace(ModelConfig(), **change)


def test_original_slm_config_is_applied_on_top_of_a_preset() -> None:
    seed = load_seed_config(SEED, get_preset("slm-63m"))
    assert (seed.model.d_model, seed.model.n_head, seed.model.n_layer) == (512, 8, 6)
    assert seed.model.dropout == 0.1
    assert seed.train.batch_size == 32
    assert seed.train.learning_rate == 0.001
    assert seed.train.max_epochs == 100
    assert seed.train.patience == 7  # early_stopping_patience wins over main.patience
    assert seed.data_path == SEED.parent / "dataset.csv"
    assert any("api_endpoint" in note for note in seed.notes)


def _seed_with(tmp_path: Path, edit) -> Path:
    data = json.loads(SEED.read_text())
    edit(data)
    path = tmp_path / "slm.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["SLMOtak"].update(num_layer=4), r"SLMOtak\.num_layer"),
        (lambda d: d.update(Extra={}), "section 'Extra'"),
        (lambda d: d["SLMOtak"].update(output_dim=256), "output_dim"),
        (lambda d: d["main"].update(batch_size="big"), "batch_size must be a number"),
        (lambda d: d["SLMOtak"].update(num_heads=7), "divisible"),
        (
            lambda d: d["SLMTrainLoad"]["early_stopping"].update(early_stopping_mode="max"),
            "early_stopping_mode",
        ),
    ],
)
def test_invalid_seed_configs_are_reported(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_seed_config(_seed_with(tmp_path, edit), get_preset("slm-tiny"))


def test_seed_config_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "slm.json"
    path.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_seed_config(path, get_preset("slm-tiny"))
