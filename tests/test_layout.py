"""The house rules a reviewer would otherwise have to remember: the import layering between the
packages and the hub's planes (import-linter's contracts in pyproject.toml), and modules and
functions small enough to read."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from harness import cli
from tests.conftest import ROOT

PACKAGES = ("slm", "node", "hub", "protos")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def _hand_written() -> list[Path]:
    """Our modules, without the generated stubs and the Alembic migrations."""
    files = [f for package in PACKAGES for f in sorted((ROOT / package).rglob("*.py"))]
    return [f for f in files if "_pb2" not in f.name and "migrations" not in f.parts]


def test_the_import_layering_holds() -> None:
    """slm and protos import nothing of ours; node only slm and protos; the hub never node nor
    torch; inside the hub, planes depend only downward on storage and shared modules."""
    done = cli("lint-imports", "--no-cache", env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_modules_and_functions_stay_small_enough_to_read() -> None:
    too_long = []
    for path in _hand_written():
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {lines} lines")
    assert not too_long, "split these by what they do:\n" + "\n".join(too_long)


def test_building_a_cli_imports_no_database_or_model_library() -> None:
    """Every `slm-hub` and `slm-node` call builds its whole parser first (the tests make hundreds
    of calls, users thousands): SQLAlchemy, Alembic, numpy and torch are imported by the commands
    that use them, not by the flags' dataclasses."""
    heavy = ("sqlalchemy", "alembic", "numpy", "torch")
    probe = (
        "import sys, hub.cli, node.cli; hub.cli.build_parser(); node.cli.build_parser(); "
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    done = cli(sys.executable, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
