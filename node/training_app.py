"""The ClientApp of the training plane: Flower's transport over slm/federated.py.

The node's SuperNode starts it (`flwr-clientapp`) for each message of a run; the node's
`--node-config` says where its model folder and data are, and the run config (the hub's plan)
which base the run's models adapt: a node whose model is another kind refuses every message of
the run (slm.federated.check_round_base). Three messages:

  query     send the current weights (the hub starts a domain's first run from them)
  train     apply the global weights, train the round's local steps on local data, send the
            weights, the number of examples and the losses back (the data itself never leaves)
  evaluate  adopt the round's global model into the model folder (the serving process picks it
            up between requests) and report its validation loss on local data
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import (
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from protos import flower_keys as keys
from protos import training_app
from protos.flower_weights import from_record, to_record
from slm.errors import SLMError
from slm.federated import adopt, check_round_base, local_train, weights_of
from slm.model_folder import load_model_folder

app = ClientApp()

NODE_ERROR = 1  # the code of every refusal this app sends; the reason says what went wrong


def _weights(message: Message) -> dict[str, np.ndarray]:
    return from_record(message.content[keys.WEIGHTS])


def _folder(context: Context) -> Path:
    return Path(str(context.node_config[keys.NODE_MODEL]))


def _use_threads(context: Context) -> None:
    """The torch threads `slm-node join --threads` gave the node (else torch's default)."""
    threads = context.node_config.get(keys.NODE_THREADS)
    if threads:
        torch.set_num_threads(int(str(threads)))


def _data(context: Context) -> Path:
    data = context.node_config.get(keys.NODE_DATA)
    if not data:
        raise SLMError("this node has no training data; start it with `slm-node join --data PATH`")
    return Path(str(data))


def expected_base(context: Context) -> str:
    """The base the hub's plan says this run's models adapt ("": whole models)."""
    try:
        plan = json.loads(str(context.run_config[training_app.PLAN]))
        return str(plan[keys.PLAN_BASE])
    except (KeyError, TypeError, ValueError):
        raise SLMError(
            "this run's config names no base for its models; the hub's SwarmLLM differs from "
            "this node's"
        ) from None


def _refuse(message: Message, exc: Exception) -> Message:
    reason = str(exc) if isinstance(exc, SLMError) else f"{type(exc).__name__}: {exc}"
    return message.create_error_reply(Error(NODE_ERROR, reason))


@app.query()
def query(message: Message, context: Context) -> Message:
    _use_threads(context)
    try:
        loaded = load_model_folder(_folder(context))
        check_round_base(loaded, expected_base(context))
    except Exception as exc:
        return _refuse(message, exc)
    weights = weights_of(loaded.model)  # an adapted model's adapter alone
    return message.create_reply(RecordDict({keys.WEIGHTS: to_record(weights)}))


@app.train()
def train(message: Message, context: Context) -> Message:
    received_at = time.time()  # one clock with the ServerApp on one machine: the bench uses it
    _use_threads(context)
    config = message.content[keys.CONFIG]
    try:
        update = local_train(
            _folder(context),
            _data(context),
            _weights(message),
            int(config[keys.LOCAL_STEPS]),
            round_seed=int(config[keys.ROUND]),
            expected_base=expected_base(context),
        )
    except Exception as exc:  # any failure goes back as this node's reason, not a crash
        return _refuse(message, exc)
    metrics = MetricRecord(
        {
            keys.NUM_EXAMPLES: update.num_examples,
            keys.TRAIN_LOSS: update.train_loss,
            keys.VAL_LOSS: update.val_loss,
            keys.SETUP_S: update.setup_s,
            keys.TRAIN_S: update.train_s,
            keys.RECEIVED_AT: received_at,
            keys.REPLIED_AT: time.time(),
        }
    )
    return message.create_reply(
        RecordDict({keys.WEIGHTS: to_record(update.weights), keys.METRICS: metrics})
    )


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    _use_threads(context)
    config = message.content[keys.CONFIG]
    data = context.node_config.get(keys.NODE_DATA)
    provenance = {
        "run_id": int(config[keys.RUN_ID]),
        "round": int(config[keys.ROUND]),
        "weights_sha256": str(config[keys.WEIGHTS_SHA256]),
    }
    try:
        version, val_loss = adopt(
            _folder(context), Path(str(data)) if data else None, _weights(message), provenance,
            expected_base=expected_base(context),
        )  # fmt: skip
    except Exception as exc:  # any failure goes back as this node's reason, not a crash
        return _refuse(message, exc)
    content = RecordDict({keys.RESULT: ConfigRecord({keys.VERSION: version})})
    if val_loss is not None:
        content[keys.METRICS] = MetricRecord({keys.VAL_LOSS: val_loss})
    return message.create_reply(content)
