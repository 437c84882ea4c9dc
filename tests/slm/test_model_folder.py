import json
import shutil
from pathlib import Path

import pytest

from slm.errors import ModelFolderError
from slm.model_folder import load_model_folder


@pytest.fixture
def folder(trained, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(trained["law"].folder, copy)
    return copy


def test_a_trained_folder_has_every_file_and_loads(folder: Path) -> None:
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "calibration.json",
        "profile.npy",
        "metrics.jsonl",
    ):
        assert (folder / name).is_file(), name
    loaded = load_model_folder(folder)
    assert loaded.domain == "law" and len(loaded.version) == 16


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "model.safetensors").unlink(), "missing model.safetensors"),
        (lambda f: _truncate(f / "model.safetensors"), "truncated or corrupted"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\0" * 64), "truncated or corrupted"),
        (lambda f: _truncate(f / "config.json"), "config.json is corrupted"),
        (lambda f: _truncate(f / "tokenizer.json"), "not a valid tokenizer"),
        (lambda f: _truncate(f / "profile.npy"), "profile.npy"),
        (lambda f: (f / "calibration.json").write_text("{}"), "calibration.json is corrupted"),
        (
            lambda f: (f / "config.json").write_text(
                json.dumps(
                    {
                        **json.loads((f / "config.json").read_text()),
                        "model": {
                            **json.loads((f / "config.json").read_text())["model"],
                            "n_layer": 5,
                        },
                    }
                )
            ),
            "does not match config.json",
        ),
    ],
)
def test_damaged_folders_are_reported_by_file(folder: Path, damage, message: str) -> None:
    damage(folder)
    with pytest.raises(ModelFolderError, match=message):
        load_model_folder(folder)


def test_unfinished_training_points_to_resume(folder: Path) -> None:
    (folder / "calibration.json").unlink()
    (folder / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(ModelFolderError, match="--resume"):
        load_model_folder(folder)
