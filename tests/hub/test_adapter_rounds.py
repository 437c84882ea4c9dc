"""Adapter rounds with real processes: a hub, two law nodes that are adapters of the embedded
base (copies of one tiny adapter, each with its own part of the law corpus) and a law node that
is a whole slm-tiny model. `slm-hub train` refuses to mix them; a node whose registry row says
it adapts the base while its model does not (a Hello that lied) is refused by its own ClientApp,
and the adapter round completes without it, storing and averaging adapter tensors alone."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.numpy import load_file
from sqlalchemy import update

from harness import Hub, Node, cli
from harness.network import CHECK_EVERY_S
from harness.processes import HarnessError, stop_all
from hub.storage.engine import make_engine, sqlite_url
from hub.storage.schema import Node as NodeRow
from slm.config import get_preset
from slm.federated import base_of, weights_of
from slm.model_folder import WEIGHTS, load_model_folder
from slm.train import train
from slm.version import model_version
from tests.conftest import held_out_split

pytestmark = pytest.mark.slow  # real hub, node and Flower processes, the 135M base

PART = 20_000  # characters of the law corpus per node


def train_cli(hub: Hub, *args: str) -> subprocess.CompletedProcess:
    return cli("slm-hub", "train", "--home", str(hub.home), "--domain", "law", *args)


def wait_ready(hub: Hub, count: int, timeout: float = 180.0) -> None:
    """Until `count` law nodes are ready to train, whatever their bases (a check of nodes that
    do not share one exits 1, so the harness's wait_trainable cannot wait for them)."""
    deadline = time.monotonic() + timeout
    while len(json.loads(train_cli(hub, "--check", "--json").stdout)["ready"]) < count:
        if time.monotonic() > deadline:
            raise HarnessError(f"fewer than {count} law nodes ready: {hub.output}")
        time.sleep(CHECK_EVERY_S)


def wait_version(hub: Hub, node_id: str, version: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while hub.nodes()[node_id].model_version != version:
        assert time.monotonic() < deadline, f"{node_id} serves {hub.nodes()[node_id].model_version}"
        time.sleep(0.2)


def whole_model(folder: Path, text: str) -> Path:
    """An slm-tiny law model trained from scratch for a few steps: a whole model, not an
    adapter (what it learned does not matter here)."""
    preset = get_preset("slm-tiny")
    train(text, "law", folder, preset.model, replace(preset.train, max_steps=10))
    return folder


def test_adapters_refuse_a_whole_model_and_train_among_themselves(law_adapter, tmp_path) -> None:  # type: ignore[no-untyped-def]
    seen, _ = held_out_split("law")
    cut = seen.rfind("\n", 0, PART)
    parts = {"a": seen[:cut], "b": seen[cut + 1 : cut + 1 + PART], "whole": seen[:cut]}
    whole = whole_model(tmp_path / "whole", seen)
    models = {"a": law_adapter, "b": law_adapter, "whole": whole}
    base = base_of(load_model_folder(law_adapter))
    start = weights_of(load_model_folder(law_adapter).model)
    hub = Hub(tmp_path / "hub")
    nodes: dict[str, Node] = {}
    try:
        for name, text in parts.items():
            data, model = tmp_path / f"{name}.txt", tmp_path / f"model-{name}"
            data.write_text(text, encoding="utf-8")
            shutil.copytree(models[name], model)
            nodes[name] = Node(tmp_path / f"node-{name}", model, hub, hub.token("law"),
                               "--data", str(data))  # fmt: skip
        ids = {name: node.node_id for name, node in nodes.items()}
        hub.wait_connected(list(ids.values()))
        wait_ready(hub, 3)

        # 1. The hub refuses to mix them, naming every node and its base, before any run.
        first, second = sorted([ids["a"], ids["b"]])
        refusal = (
            f"law nodes do not share a base: {first[:12]} and {second[:12]} adapt base "
            f"{base[:12]}…, {ids['whole'][:12]} is a whole model (slm-tiny); a round averages "
            "one kind of weights: train them on one base, or take those of other bases out of "
            "the round (stop their `slm-node join`, or `slm-hub node revoke` them)"
        )
        check = train_cli(hub, "--check")
        assert check.returncode == 1 and check.stderr == f"slm-hub: {refusal}\n"
        refused = train_cli(hub, "--local-steps", "1")
        assert refused.returncode == 1 and refused.stderr == f"slm-hub: error: {refusal}\n"
        assert not (hub.home / "models" / "law").exists()

        # 2. The whole model's registry row now says it adapts the base, as a lying Hello would:
        # the hub lets it in, and its own ClientApp refuses every message of the run.
        engine = make_engine(sqlite_url(hub.home / "hub.db"))
        with engine.begin() as conn:
            conn.execute(update(NodeRow).where(NodeRow.node_id == ids["whole"]).values(base=base))
        engine.dispose()
        done = train_cli(hub, "--rounds", "1", "--local-steps", "2", "--timeout", "240")
        assert done.returncode == 0, done.stderr
        assert "round 1: 2 participant(s), 1 rejected" in done.stderr
        assert (
            f"rejected {ids['whole'][:12]}: this node's model is a whole model, but this round "
            f"averages adapters of base {base[:12]}…; it takes no part" in done.stderr
        )

        # 3. The ledger pays the two adapter nodes; the stored global model is adapter tensors.
        history = cli("slm-hub", "ledger", "history", "--kind", "training_reward", "--json",
                      "--home", str(hub.home), check=True)  # fmt: skip
        paid = sorted(e["credit"] for e in json.loads(history.stdout))
        assert paid == sorted(f"node:{ids[n]}" for n in ("a", "b"))
        (stored,) = (hub.home / "models" / "law").glob("*.safetensors")
        weights = load_file(stored)
        assert set(weights) == set(start)
        assert all(name.endswith((".lora_a", ".lora_b")) for name in weights)

        # 4. Both adapter nodes hold the global adapter, byte for byte, and serve its version
        # (an adapted model's version binds its base and shape too); the whole model is as it was.
        version = model_version(stored.stem, json.loads((law_adapter / "config.json").read_text()))
        for name in ("a", "b"):
            wait_version(hub, ids[name], version)
            held = (tmp_path / f"model-{name}" / WEIGHTS).read_bytes()
            assert hashlib.sha256(held).hexdigest() == stored.stem
        assert hub.nodes()[ids["whole"]].model_version == load_model_folder(models["whole"]).version
    finally:
        stop_all([*nodes.values(), hub], timeout=60)
