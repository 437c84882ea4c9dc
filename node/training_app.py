"""The ClientApp of the training plane: Flower's transport over slm/federated.py.

The node's SuperNode starts it (`flwr-clientapp`) for each message of a run; the node's
`--node-config` says where its model folder and data are. Three messages:

  query     send the current weights (the hub starts a domain's first run from them)
  train     apply the global weights, train the round's local steps on local data, send the
            weights, `num-examples` and the losses back (the data itself never leaves)
  evaluate  adopt the round's global model into the model folder (the serving process picks it
            up between requests) and report its validation loss on local data
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from slm.errors import SLMError
from slm.federated import adopt, local_train
from slm.model_folder import load_model_folder

app = ClientApp()

NODE_ERROR = 1  # the code of every refusal this app sends; the reason says what went wrong


def _record(weights: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()})


def _weights(message: Message) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in message.content["weights"].items()}


def _folder(context: Context) -> Path:
    return Path(str(context.node_config["model"]))


def _use_threads(context: Context) -> None:
    """The torch threads `slm-node join --threads` gave the node (else torch's default)."""
    threads = context.node_config.get("threads")
    if threads:
        torch.set_num_threads(int(str(threads)))


def _data(context: Context) -> Path:
    data = context.node_config.get("data")
    if not data:
        raise SLMError("this node has no training data; start it with `slm-node join --data PATH`")
    return Path(str(data))


def _refuse(message: Message, exc: Exception) -> Message:
    reason = str(exc) if isinstance(exc, SLMError) else f"{type(exc).__name__}: {exc}"
    return message.create_error_reply(Error(NODE_ERROR, reason))


@app.query()
def query(message: Message, context: Context) -> Message:
    _use_threads(context)
    try:
        loaded = load_model_folder(_folder(context))
    except Exception as exc:
        return _refuse(message, exc)
    weights = {k: v.detach().numpy() for k, v in loaded.model.state_dict().items()}
    return message.create_reply(RecordDict({"weights": _record(weights)}))


@app.train()
def train(message: Message, context: Context) -> Message:
    received_at = time.time()  # one clock with the ServerApp on one machine: the bench uses it
    _use_threads(context)
    config = message.content["config"]
    try:
        update = local_train(
            _folder(context),
            _data(context),
            _weights(message),
            int(config["local-steps"]),
            round_seed=int(config["round"]),
        )
    except Exception as exc:  # any failure goes back as this node's reason, not a crash
        return _refuse(message, exc)
    metrics = MetricRecord(
        {
            "num-examples": update.num_examples,
            "train_loss": update.train_loss,
            "val_loss": update.val_loss,
            "setup_s": update.setup_s,
            "train_s": update.train_s,
            "received_at": received_at,
            "replied_at": time.time(),
        }
    )
    return message.create_reply(
        RecordDict({"weights": _record(update.weights), "metrics": metrics})
    )


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    _use_threads(context)
    config = message.content["config"]
    data = context.node_config.get("data")
    provenance = {
        "run_id": int(config["run-id"]),
        "round": int(config["round"]),
        "weights_sha256": str(config["weights-sha256"]),
    }
    try:
        version, val_loss = adopt(
            _folder(context), Path(str(data)) if data else None, _weights(message), provenance
        )
    except Exception as exc:  # any failure goes back as this node's reason, not a crash
        return _refuse(message, exc)
    content = RecordDict({"result": ConfigRecord({"version": version})})
    if val_loss is not None:
        content["metrics"] = MetricRecord({"val_loss": val_loss})
    return message.create_reply(content)
