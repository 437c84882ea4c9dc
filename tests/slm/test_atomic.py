import stat
from pathlib import Path

import pytest

from slm.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_files_get_ordinary_permissions_and_keys_private_ones(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "config.json", "{}")
    atomic_write_bytes(tmp_path / "key", b"secret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
