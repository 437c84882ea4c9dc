import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

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


def _drop_a_tensor(path: Path) -> None:
    """A weights file that lacks one block's tensor: the model is built empty for loading
    (SLM.for_loading), so a missing tensor must be refused, never served as garbage."""
    tensors = load_file(path)
    del tensors[next(k for k in sorted(tensors) if k.startswith("blocks.1."))]
    save_file(tensors, path)


def _reshape(folder: Path, **shape: int) -> None:
    meta = json.loads((folder / "config.json").read_text())
    meta["model"] |= shape
    (folder / "config.json").write_text(json.dumps(meta))


def _number_a_token(folder: Path, token_id: int) -> None:
    """A tokenizer whose ids have a gap: as many tokens as the model's vocabulary, one of them
    numbered past its embedding."""
    tok = json.loads((folder / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab[max(vocab, key=vocab.get)] = token_id
    (folder / "tokenizer.json").write_text(json.dumps(tok))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "model.safetensors").unlink(), "missing model.safetensors"),
        (lambda f: _truncate(f / "model.safetensors"), "truncated or corrupted"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\0" * 64), "truncated or corrupted"),
        (lambda f: _drop_a_tensor(f / "model.safetensors"), "describes .* parameters"),
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
            "describes .* parameters",
        ),
        (lambda f: _reshape(f, n_layer=10**9), "describes .* parameters"),  # never built
        (lambda f: _reshape(f, d_model=1 << 20, n_head=1), "describes .* parameters"),
        (lambda f: _reshape(f, block_size=1 << 40), "describes .* parameters"),
        (lambda f: _number_a_token(f, 10**6), "token ids up to 1000000"),
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


def _changed_files(folder: Path) -> dict[str, bytes]:
    """The files an adoption replaces, for a model whose weights all moved a little."""
    import torch

    from slm.model_folder import CALIBRATION, CONFIG, WEIGHTS, weights_bytes

    loaded = load_model_folder(folder)
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(0.01)
    return {
        WEIGHTS: weights_bytes(loaded.model),
        CALIBRATION: (folder / CALIBRATION).read_bytes(),
        CONFIG: (folder / CONFIG).read_bytes(),
    }


def test_a_replacement_that_crashed_before_its_commit_leaves_the_old_model(folder: Path) -> None:
    before = load_model_folder(folder).version
    files = _changed_files(folder)
    (folder / "model.safetensors.next").write_bytes(files["model.safetensors"])  # no commit
    assert load_model_folder(folder).version == before
    assert (folder / "model.safetensors.next").exists()  # a writer may still be at work


def test_a_replacement_that_crashed_after_its_commit_is_finished_by_the_next_reader(
    folder: Path,
) -> None:
    from slm.model_folder import replace_files

    files = _changed_files(folder)
    (folder / "model.safetensors.next").write_bytes(files["model.safetensors"])
    (folder / "config.json.next").write_bytes(files["config.json"])  # committed, not moved
    new_version = hashlib.sha256(files["model.safetensors"]).hexdigest()[:16]
    assert load_model_folder(folder).version == new_version
    assert not list(folder.glob("*.next"))
    replace_files(folder, files)  # the same change again is harmless
    assert load_model_folder(folder).version == new_version
