"""The training plane's one app: the Flower app bundle (FAB) the hub starts every run with, and
the only one a node's SuperNode runs.

A FAB names the ServerApp and ClientApp it runs and may carry Python modules of its own, which
Flower installs and imports: whoever can start a run with a foreign bundle runs code on every
node. Ours carries no code (it names modules installed with SwarmLLM) and no settings (the run
config's one key, `PLAN`, holds the hub's training plan as JSON, sent with each run), so it is
static: hub and node build the same bytes from this module, and a node refuses any bundle
whose sha256 differs from the one it computed itself, asking no one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from typing import Any

APP_NAME, APP_PUBLISHER = "swarmllm-training", "swarmllm"
SERVERAPP, CLIENTAPP = "hub.server_app:app", "node.training_app:app"
PLAN = "plan"  # the run config's only key: the hub's TrainingPlan as JSON
REFUSED = "refused to run another app bundle"  # what a launcher logs when it does


def pyproject(name: str, publisher: str, components: dict[str, str],
              config: dict[str, object]) -> str:  # fmt: skip
    """A Flower app's pyproject.toml: the only file of ours, one of the benchmark's peer."""
    import json

    lines = [
        "[build-system]", 'requires = ["hatchling"]', 'build-backend = "hatchling.build"', "",
        "[project]", f'name = "{name}"', 'version = "1.0.0"', "dependencies = []", "",
        "[tool.flwr.app]", f'publisher = "{publisher}"', "",
        "[tool.flwr.app.components]", *(f'{k} = "{v}"' for k, v in components.items()), "",
        "[tool.flwr.app.config]", *(f"{k} = {json.dumps(v)}" for k, v in config.items()),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


PYPROJECT = pyproject(APP_NAME, APP_PUBLISHER, {"serverapp": SERVERAPP, "clientapp": CLIENTAPP},
                      {PLAN: ""})  # fmt: skip


@functools.cache
def bundle() -> bytes:
    """The FAB: a zip of pyproject.toml alone, built the way Flower builds one (its entries'
    dates are fixed, so the bytes and their hash are the same on every machine)."""
    from flwr.cli.build import build_fab_from_files

    return build_fab_from_files({"pyproject.toml": PYPROJECT.encode()})[0]


def bundle_sha256() -> str:
    """What Flower calls the bundle's hash: the one a node lets run."""
    return hashlib.sha256(bundle()).hexdigest()


def pinned_plugin(task_type: str) -> type:
    """Flower's SuperExec plugin, taking tasks of one type (CLIENT_APP, SERVER_APP) and
    launching a task only if its bundle is this one; any other is refused, logged and left to
    expire."""
    import logging

    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor import LaunchResult

    superexec = _superexec()
    kind, pinned = TaskType[task_type], bundle_sha256()

    class PinnedPlugin(superexec.AutoExecPlugin):  # type: ignore[misc, name-defined]
        supported_task_types = frozenset({kind})

        def launch_task(self, token: str, task: Any) -> Any:
            if task.fab_hash.lower() != pinned:
                superexec.log(logging.ERROR, "%s: task %d, bundle %s (only %s runs here)",
                              REFUSED, task.task_id, task.fab_hash, pinned)  # fmt: skip
                return LaunchResult.failed(f"bundle {task.fab_hash} is not SwarmLLM's app")
            return super().launch_task(token, task)

    return PinnedPlugin


def run_pinned_superexec(task_type: str, launched_command: str | None = None) -> None:
    """Flower's SuperExec command line with `pinned_plugin(task_type)`; `launched_command`
    replaces Flower's process for the task (a node's checks the bundle's bytes too:
    `install_checked`). Flower builds its plugin from the module-level name AutoExecPlugin and
    the task's command from TASK_TYPE_TO_COMMAND: both are replaced before its CLI runs."""
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND, TaskType

    _superexec().AutoExecPlugin = pinned_plugin(task_type)
    if launched_command:
        TASK_TYPE_TO_COMMAND[TaskType[task_type]] = launched_command
    importlib.import_module("flwr.supercore.cli.flower_superexec").flower_superexec()


def install_checked(module: str) -> None:
    """Make `module` (Flower's task runner) install a bundle only if its bytes are this one:
    the hash a task names comes from the Runtime server, whose port a local user could have
    taken first; the bytes are what would run."""
    runner = importlib.import_module(module)
    install, pinned = runner.install_from_fab, bundle_sha256()

    def checked(content: bytes, *args: object, **kwargs: object) -> object:
        if hashlib.sha256(content).hexdigest() != pinned:
            raise SystemExit(f"{REFUSED}: its bytes are not SwarmLLM's app")
        return install(content, *args, **kwargs)

    runner.install_from_fab = checked


def _superexec() -> Any:
    """Flower's run_superexec module."""
    return importlib.import_module("flwr.supercore.superexec.run_superexec")
