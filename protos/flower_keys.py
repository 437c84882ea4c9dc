"""The names in the training plane's Flower messages, for the ServerApp (hub) and the ClientApp
(node) alike: one constant per fact, all snake_case, so neither side can spell one differently.

Flower carries three kinds of records in a message's content, each under a name here; the
config and metric records hold the keys below. The run config (the hub's TrainingPlan) uses its
dataclass field names as keys, in the same style.
"""

from __future__ import annotations

# Records in a message's content.
CONFIG = "config"  # ConfigRecord: what the hub asks of this message
WEIGHTS = "weights"  # ArrayRecord: the global model (to a node) or a node's update (back)
METRICS = "metrics"  # MetricRecord: a node's numbers about its reply
RESULT = "result"  # ConfigRecord: what an adoption produced

# CONFIG of a train or evaluate message.
ROUND = "round"  # 1-based number of the round in its run
RUN_ID = "run_id"  # Flower's run id
LOCAL_STEPS = "local_steps"  # training steps each node takes this round
WEIGHTS_SHA256 = "weights_sha256"  # evaluate: the global model's hash, its version

# METRICS of a train reply (evaluate: VAL_LOSS only).
NUM_EXAMPLES = "num_examples"  # training windows in the node's data: its weight in FedAvg
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
SETUP_S = "setup_s"  # loading the model and the data
TRAIN_S = "train_s"  # the local steps and the validation pass
RECEIVED_AT = "received_at"  # Unix time the ClientApp got the message
REPLIED_AT = "replied_at"  # Unix time it replied
NODE_METRICS = (TRAIN_LOSS, VAL_LOSS, SETUP_S, TRAIN_S, RECEIVED_AT, REPLIED_AT)

# RESULT of an evaluate reply.
VERSION = "version"  # the model version the node now serves

# The node config each SuperNode is started with (`--node-config`), read by the ClientApp.
NODE_MODEL = "model"  # the model folder
NODE_DOMAIN = "domain"
NODE_DATA = "data"  # the node's training data; absent: it serves but does not train
NODE_THREADS = "threads"  # torch threads for local training

# The run config holds the hub's TrainingPlan as JSON (protos.training_app.PLAN); the ClientApp
# reads this one of its fields (the plan's field of the same name).
PLAN_BASE = "base"  # sha256 of the base whose adapters the run averages; "": whole models
