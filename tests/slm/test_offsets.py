"""A node's pool offsets are measured once per model: kept in its folder and in the machine's
cache, keyed by the model's version, and measured again for another model or an edited cache.
The calibration pool's sentence vectors are cached the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from slm import cache
from slm import offsets as offsets_module
from slm.model_folder import load_model_folder
from slm.offsets import CACHED_OFFSETS, CACHED_VECTORS, KEPT, measured, offsets


def test_offsets_are_kept_for_the_same_model_and_remeasured_for_another(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "medicine"
    shutil.copytree(trained["medicine"].folder, folder)
    (folder / KEPT).unlink(missing_ok=True)  # kept there by a node that served it before
    loaded = load_model_folder(folder)
    first = measured(loaded, None, None)
    assert first == offsets(loaded.model, loaded.tokenizer, None, None)
    kept = json.loads((folder / KEPT).read_text())
    assert kept["key"]["version"] == loaded.version and kept["key"]["form"] == "fp32"

    calls: list[int] = []
    real = offsets_module.offsets
    monkeypatch.setattr(offsets_module, "offsets", lambda *a: calls.append(1) or real(*a))
    assert measured(load_model_folder(folder), None, None) == first and not calls

    # A copy of the model elsewhere, without its kept file, finds it in the machine's cache.
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / KEPT).unlink()
    assert measured(load_model_folder(copy), None, None) == first and not calls
    assert json.loads((copy / KEPT).read_text()) == kept  # and the copy keeps it again

    (folder / KEPT).write_text(json.dumps({**kept, "loglik_per_byte": 5.0}))  # impossible
    (entry,) = (tmp_path / "cache" / CACHED_OFFSETS).iterdir()
    entry.write_text(entry.read_text()[:20])  # and a damaged cache entry
    assert measured(load_model_folder(folder), None, None) == first and len(calls) == 1
    assert json.loads(entry.read_text()) == kept  # written whole again

    other = load_model_folder(trained["law"].folder)
    (trained["law"].folder / KEPT).unlink(missing_ok=True)
    shutil.copy(folder / KEPT, trained["law"].folder / KEPT)  # another model's offsets
    assert measured(other, None, None).loglik_per_byte != first.loglik_per_byte
    assert len(calls) == 2
    (trained["law"].folder / KEPT).unlink()


def test_the_pools_vectors_are_embedded_once_per_encoder_and_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    from slm.encoder import shared_encoder

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    offsets_module.pool_vectors.cache_clear()
    embedded = shared_encoder().embed(list(offsets_module.pool()))
    first = offsets_module.pool_vectors()
    np.testing.assert_array_equal(first, embedded)
    (entry,) = (tmp_path / "cache" / CACHED_VECTORS).iterdir()

    calls: list[int] = []
    real = type(shared_encoder()).embed
    monkeypatch.setattr(type(shared_encoder()), "embed",
                        lambda *a, **k: calls.append(1) or real(*a, **k))  # fmt: skip
    offsets_module.pool_vectors.cache_clear()
    np.testing.assert_array_equal(offsets_module.pool_vectors(), embedded)
    assert not calls  # read back, not embedded

    entry.write_bytes(entry.read_bytes()[:-8])  # a truncated entry: embedded again, rewritten
    offsets_module.pool_vectors.cache_clear()
    np.testing.assert_array_equal(offsets_module.pool_vectors(), embedded)
    assert len(calls) == 1 and entry.stat().st_size > 72 * 384 * 4
    offsets_module.pool_vectors.cache_clear()
