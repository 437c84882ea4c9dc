"""The node's ClientApp launcher: Flower's SuperExec, launching only the project's own app.

`python -m node.pinned_exec` runs beside a SuperNode started with `--isolation process`, in
place of the SuperExec the SuperNode would start itself, which launches whatever bundle a run
names (a bundle can carry Python modules, imported as its ClientApp: code run on the node).
This one takes ClientApp tasks only and launches a task only if its bundle's sha256 is the one
the node computed itself from `protos.training_app`; any other is refused, logged, and left to
expire. Flower checks that a bundle's bytes match the hash it is stored under, so the pin is on
content.

The private names it relies on are pinned with `flwr==1.41.0` and imported by a test.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from protos import training_app

REFUSED = "refused a ClientApp of another bundle"


def superexec() -> Any:
    """Flower's run_superexec module, which builds its plugin from the name AutoExecPlugin."""
    return importlib.import_module("flwr.supercore.superexec.run_superexec")


def pinned_plugin(allowed: frozenset[str]) -> type:
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor import LaunchResult

    base = superexec().AutoExecPlugin

    class PinnedPlugin(base):  # type: ignore[misc, valid-type]
        supported_task_types = frozenset({TaskType.CLIENT_APP})

        def launch_task(self, token: str, task: Any) -> Any:
            if task.fab_hash.lower() not in allowed:
                only = ", ".join(sorted(allowed))
                superexec().log(logging.ERROR, "%s: task %d, bundle %s (this node runs only %s)",
                                REFUSED, task.task_id, task.fab_hash, only)  # fmt: skip
                return LaunchResult.failed(f"bundle {task.fab_hash} is not this node's app")
            return super().launch_task(token, task)

    return PinnedPlugin


def main() -> None:
    superexec().AutoExecPlugin = pinned_plugin(frozenset({training_app.bundle_sha256()}))
    importlib.import_module("flwr.supercore.cli.flower_superexec").flower_superexec()


if __name__ == "__main__":
    main()
