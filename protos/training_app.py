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

APP_NAME, APP_PUBLISHER = "swarmllm-training", "swarmllm"
SERVERAPP, CLIENTAPP = "hub.server_app:app", "node.training_app:app"
PLAN = "plan"  # the run config's only key: the hub's TrainingPlan as JSON

PYPROJECT = f"""\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{APP_NAME}"
version = "1.0.0"
description = "SwarmLLM federated rounds; the code is installed with swarmllm"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "{APP_PUBLISHER}"

[tool.flwr.app.components]
serverapp = "{SERVERAPP}"
clientapp = "{CLIENTAPP}"

[tool.flwr.app.config]
{PLAN} = ""
"""


@functools.cache
def bundle() -> bytes:
    """The FAB: a zip of pyproject.toml alone, built the way Flower builds one (its entries'
    dates are fixed, so the bytes and their hash are the same on every machine)."""
    from flwr.cli.build import build_fab_from_files

    return build_fab_from_files({"pyproject.toml": PYPROJECT.encode()})[0]


def bundle_sha256() -> str:
    """What Flower calls the bundle's hash: the one a node lets run."""
    return hashlib.sha256(bundle()).hexdigest()
