"""The training app's launchers without processes (with them: tests/hub/test_training_plane.py):
only the project's app bundle is launched or installed, whatever else a run names."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import pytest

from protos import training_app


@dataclass
class Task:
    task_id: int
    fab_hash: str


def test_flower_builds_its_plugin_and_task_command_from_the_names_replaced() -> None:
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND, TaskType

    module = importlib.import_module("flwr.supercore.superexec.run_superexec")
    assert hasattr(module, "AutoExecPlugin") and hasattr(module, "log")
    assert TaskType.CLIENT_APP in TASK_TYPE_TO_COMMAND
    runner = importlib.import_module("flwr.supernode.runtime.run_clientapp")
    assert hasattr(runner, "install_from_fab")


@pytest.mark.parametrize("kind", ["CLIENT_APP", "SERVER_APP"])
def test_a_task_of_another_bundle_is_refused_before_anything_launches(kind: str) -> None:
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor import LaunchResultStatus

    plugin_class = training_app.pinned_plugin(kind)
    assert plugin_class.supported_task_types == frozenset({TaskType[kind]})
    plugin = plugin_class.__new__(plugin_class)  # launch_task refuses before touching its state
    refused = plugin.launch_task("token", Task(7, "ab" * 32))
    assert refused.status == LaunchResultStatus.FAILED and "not SwarmLLM's app" in refused.message


def test_only_the_bundle_s_own_bytes_are_installed(monkeypatch) -> None:
    runner = importlib.import_module("flwr.supernode.runtime.run_clientapp")
    installed = []
    monkeypatch.setattr(runner, "install_from_fab", lambda content, **kw: installed.append(content))
    training_app.install_checked("flwr.supernode.runtime.run_clientapp")
    with pytest.raises(SystemExit, match=training_app.REFUSED):
        runner.install_from_fab(b"PK\x03\x04 a bundle of someone else's", skip_prompt=True)
    runner.install_from_fab(training_app.bundle(), skip_prompt=True)
    assert installed == [training_app.bundle()]
