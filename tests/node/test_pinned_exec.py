"""The node's ClientApp launcher without processes (with them: tests/hub/test_training_plane.py):
only the project's app bundle is launched, whatever else a run names."""

from __future__ import annotations

from dataclasses import dataclass

from node.pinned_exec import pinned_plugin, superexec
from protos import training_app


@dataclass
class Task:
    task_id: int
    fab_hash: str


def test_flower_builds_its_plugin_from_the_name_the_launcher_replaces() -> None:
    module = superexec()
    assert hasattr(module, "AutoExecPlugin") and hasattr(module, "log")


def test_a_task_of_another_bundle_is_refused_before_anything_launches() -> None:
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor import LaunchResultStatus

    ours = training_app.bundle_sha256()
    plugin_class = pinned_plugin(frozenset({ours}))
    assert plugin_class.supported_task_types == frozenset({TaskType.CLIENT_APP})
    plugin = plugin_class.__new__(plugin_class)  # launch_task refuses before touching its state
    refused = plugin.launch_task("token", Task(7, "ab" * 32))
    assert refused.status == LaunchResultStatus.FAILED and "not this node's app" in refused.message
