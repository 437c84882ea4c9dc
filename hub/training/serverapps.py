"""The hub's ServerApp launcher: `python -m hub.training.serverapps`, started by the locked
SuperLink (`locked_superlink`), which runs with `--isolation process` so that its Runtime API
hands tasks only to a launcher holding the SuperLink's secret. Flower's SuperExec, taking
ServerApp tasks of the project's own app bundle only (`protos.training_app`)."""

from __future__ import annotations

from protos import training_app


def main() -> None:
    training_app.run_pinned_superexec("SERVER_APP")


if __name__ == "__main__":
    main()
