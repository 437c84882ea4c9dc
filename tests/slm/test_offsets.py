"""A node's pool offsets are measured once per model: kept in its folder, keyed by the model's
version, and measured again for another model or an edited cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slm import offsets as offsets_module
from slm.model_folder import load_model_folder
from slm.offsets import KEPT, measured, offsets


def test_offsets_are_kept_for_the_same_model_and_remeasured_for_another(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    folder = tmp_path / "medicine"
    shutil.copytree(trained["medicine"].folder, folder)
    loaded = load_model_folder(folder)
    first = measured(loaded, None, None)
    assert first == offsets(loaded.model, loaded.tokenizer, None, None)
    kept = json.loads((folder / KEPT).read_text())
    assert kept["key"]["version"] == loaded.version and kept["key"]["form"] == "fp32"

    calls: list[int] = []
    real = offsets_module.offsets
    monkeypatch.setattr(offsets_module, "offsets", lambda *a: calls.append(1) or real(*a))
    assert measured(load_model_folder(folder), None, None) == first and not calls

    (folder / KEPT).write_text(json.dumps({**kept, "loglik_per_byte": 5.0}))  # impossible
    assert measured(load_model_folder(folder), None, None) == first and len(calls) == 1

    other = load_model_folder(trained["law"].folder)
    (trained["law"].folder / KEPT).unlink(missing_ok=True)
    shutil.copy(folder / KEPT, trained["law"].folder / KEPT)  # another model's offsets
    assert measured(other, None, None).loglik_per_byte != first.loglik_per_byte
    assert len(calls) == 2
    (trained["law"].folder / KEPT).unlink()
