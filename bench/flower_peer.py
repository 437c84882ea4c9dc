"""The routing benchmark's peer on Flower's Message API: one score query, the same prompt and
the same node model as an Ask, as a Flower message from a ServerApp to a SuperNode and back.

Shipped inside its own app bundle (this file and a pyproject.toml), submitted by
bench/routing_bench.py to a plain Flower SuperLink it starts beside the hub (the hub's own
training plane runs no bundle but SwarmLLM's training app). The ServerApp sends `queries`
messages one after the other to the first online node and writes every round trip (ms) to
`out` as JSON; the ClientApp scores the prompt with the node's model (its `--node-config`
names the folder).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from protos import training_app

server = ServerApp()
client = ClientApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    node = sorted(grid.get_node_ids())[0]
    trips = []
    for _ in range(int(config["queries"])):
        message = Message(
            RecordDict({"q": ConfigRecord({"prompt": str(config["prompt"])})}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        began = time.perf_counter()
        (reply,) = grid.send_and_receive([message], timeout=120)
        trips.append((time.perf_counter() - began) * 1000)
        if reply.has_error():
            raise RuntimeError(reply.error.reason)
    Path(str(config["out"])).write_text(json.dumps(trips))


@client.query()
def query(message: Message, context: Context) -> Message:
    from slm.model_folder import load_model_folder
    from slm.scoring import score

    loaded = load_model_folder(Path(str(context.node_config["model"])))
    prompt = str(message.content["q"]["prompt"])
    s = score(loaded.model, loaded.tokenizer, loaded.quantiles, prompt)
    return message.create_reply(RecordDict({"s": MetricRecord({"loglik": s.loglik})}))


PYPROJECT = training_app.pyproject(
    "swarmllm-routing-peer", "swarmllm",
    {"serverapp": "flower_peer:server", "clientapp": "flower_peer:client"},
    {"queries": 5, "prompt": "", "out": ""},
)  # fmt: skip


def bundle() -> bytes:
    from flwr.cli.build import build_fab_from_files

    files = {"pyproject.toml": PYPROJECT.encode(), "flower_peer.py": Path(__file__).read_bytes()}
    return build_fab_from_files(files)[0]
