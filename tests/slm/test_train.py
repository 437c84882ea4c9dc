import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slm.checkpoint import CHECKPOINT
from slm.config import get_preset
from slm.errors import DataError
from slm.train import read_corpus, split_corpus, train
from tests.conftest import CORPORA

TINY = get_preset("slm-tiny")
TEXT = (CORPORA / "law.txt").read_text(encoding="utf-8")


def test_early_stopping_halts_on_a_plateau(tmp_path: Path) -> None:
    # A learning rate of zero makes validation loss flat: the first validation sets the best,
    # then `patience` validations without improvement stop the run.
    cfg = replace(TINY.train, learning_rate=0.0, max_steps=1000, eval_interval=5, patience=3)
    result = train(TEXT, "law", tmp_path, TINY.model, cfg)
    assert result.stop_reason == "early_stopping"
    assert result.steps == 5 * (1 + 3)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "step" in x and "event" not in x] == [5, 10, 15, 20]


def test_resume_continues_at_the_saved_step_with_the_same_optimiser_state(tmp_path: Path) -> None:
    cfg = replace(TINY.train, max_steps=40, eval_interval=10, patience=100)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(TEXT, "law", straight, TINY.model, cfg)

    stopped = train(TEXT, "law", interrupted, TINY.model, cfg, should_stop=lambda s: s >= 20)
    assert stopped.stop_reason == "stopped" and stopped.steps == 20
    saved = torch.load(interrupted / CHECKPOINT, weights_only=True)
    assert saved["step"] == 20
    assert saved["optimizer"]["state"][0]["step"].item() == 20

    steps_seen: list[int] = []
    resumed = train(
        TEXT,
        "law",
        interrupted,
        TINY.model,
        cfg,
        resume=True,
        on_step=lambda step, total, loss: steps_seen.append(step),
    )
    assert steps_seen[0] == 21 and resumed.steps == 40
    # Same data order, same optimiser moments: the weights equal an uninterrupted run's.
    a, b = load_file(straight / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_resume_refuses_other_data(tmp_path: Path) -> None:
    cfg = replace(TINY.train, max_steps=20, eval_interval=10)
    train(TEXT, "law", tmp_path, TINY.model, cfg, should_stop=lambda s: s >= 10)
    other = (CORPORA / "medicine.txt").read_text(encoding="utf-8")
    with pytest.raises(DataError, match="other data"):
        train(other, "law", tmp_path, TINY.model, cfg, resume=True)


def test_split_is_interleaved_and_disjoint() -> None:
    train_text, val_text = split_corpus(TEXT, 0.1)
    assert len(train_text) + len(val_text) == len(TEXT)
    assert 0.05 < len(val_text) / len(TEXT) < 0.15


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"ok\xff\xfe", "not UTF-8"),
        (b"tiny text", "too small"),
    ],
)
def test_bad_training_data_is_refused_before_anything_is_written(
    tmp_path: Path, content: bytes, message: str
) -> None:
    data = tmp_path / "data.txt"
    data.write_bytes(content)
    out = tmp_path / "model"
    with pytest.raises(DataError, match=message):
        train(read_corpus(data), "law", out, TINY.model, TINY.train)
    assert not out.exists()


def test_missing_data_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_corpus(tmp_path / "nothing.txt")
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(DataError, match="no files"):
        read_corpus(tmp_path / "empty-folder")


def test_every_training_window_starts_with_bos() -> None:
    from slm.train import windows

    data = torch.arange(100)
    x, y = windows(data, [0, 10, 50], 8, bos_id=999)
    assert x[:, 0].tolist() == [999, 999, 999]
    assert x[1, 1:].tolist() == list(range(11, 18)) and y[1].tolist() == list(range(11, 19))


def test_resuming_a_finished_model_unmarks_it_until_the_run_completes(tmp_path: Path) -> None:
    from slm.checkpoint import prepare_out_dir
    from slm.errors import ModelFolderError
    from slm.model_folder import load_model_folder

    cfg = replace(TINY.train, max_steps=20, eval_interval=10)
    train(TEXT, "law", tmp_path, TINY.model, cfg)
    prepare_out_dir(tmp_path, resume=True, force=False)
    with pytest.raises(ModelFolderError, match="--resume"):
        load_model_folder(tmp_path)
    train(TEXT, "law", tmp_path, TINY.model, replace(cfg, max_steps=30), resume=True)
    assert load_model_folder(tmp_path).training["steps"] == 30


def test_hidden_folders_are_not_training_data(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "index").write_bytes(b"\xff\xfe binary")
    (tmp_path / "notes.txt").write_text("real text")
    assert read_corpus(tmp_path) == "real text"
