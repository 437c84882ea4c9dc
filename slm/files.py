"""File helpers the hub and the node share: a home folder's named files, and reading a key file
with one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from slm.errors import SLMError

K = TypeVar("K")


class _HasHome(Protocol):
    home: Path


class HomeFile:
    """A file of a home folder, read as an attribute: `key_path = HomeFile("node_key")` on a
    class with a `home` gives `self.home / "node_key"`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, owner: _HasHome | None, kind: type | None = None) -> Path:
        if owner is None:  # on the class: the descriptor itself, e.g. for its name
            return self  # type: ignore[return-value]
        return owner.home / self.name


def read_key(
    path: Path, parse: Callable[[bytes], Any], kind: Callable[[Any], bool], name: str,
    what: str, missing: str,
) -> Any:  # fmt: skip
    """The key in `path`, parsed, and of the kind expected: `name` says whose key it is (the
    node key), `what` its format (an OpenSSH private key), `missing` what to do without it."""
    try:
        key = parse(path.read_bytes())
    except FileNotFoundError:
        raise SLMError(f"no {name} at {path}; {missing}") from None
    except ValueError as exc:
        raise SLMError(f"{path} is not {what}: {exc}") from None
    if not kind(key):
        raise SLMError(f"{path} must be {what}")
    return key
