"""`slm-clientapp`: Flower's `flwr-clientapp`, installing no bundle but the project's own.

The node's launcher (`node.pinned_exec`) starts it for a task whose bundle hash is the pinned
one; that hash is what the SuperNode's Runtime API says, so this process checks the bytes it is
given before Flower installs and imports them.
"""

from __future__ import annotations

from protos import training_app


def main() -> None:
    training_app.install_checked("flwr.supernode.runtime.run_clientapp")
    from flwr.supernode.cli import flwr_clientapp

    flwr_clientapp()


if __name__ == "__main__":
    main()
