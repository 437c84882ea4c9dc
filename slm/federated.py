"""What one node computes in a federated round, on its own data: train from the global weights,
and adopt a new global model into its model folder.

Kept apart from Flower (node/training_app.py is the thin ClientApp over it) so the same local
training runs in the acceptance comparison and the benchmark without a network. Weights cross
this boundary as {name: float32 ndarray} in the model's state-dict order, the form both Flower's
ArrayRecord and safetensors carry.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slm import lora
from slm.config import TrainConfig
from slm.errors import ConfigError, DataError
from slm.model import SLM
from slm.model_folder import (
    CALIBRATION,
    CONFIG,
    WEIGHTS,
    LoadedModel,
    calibration_bytes,
    config_bytes,
    load_model_folder,
    replace_files,
    weights_bytes,
)
from slm.scoring import calibrate, calibration_passages
from slm.train import (
    evaluate,
    get_batch,
    make_optimizer,
    read_corpus,
    split_corpus,
    train_step,
)
from slm.version import model_version

LOCAL_LR_FACTOR = 0.5  # rounds fine-tune a trained model: half its peak rate, held constant


@dataclass(frozen=True)
class LocalData:
    """A node's own text, tokenized and split as its training split it (every k-th chunk)."""

    train: torch.Tensor
    val: torch.Tensor
    val_text: str


def train_config_of(loaded: LoadedModel) -> TrainConfig:
    """The node's own training settings, as its model folder recorded them."""
    recorded = loaded.training.get("train_config") or {}
    try:
        return TrainConfig(**recorded)
    except (TypeError, ConfigError) as exc:
        raise ConfigError(f"{loaded.path}: the recorded train_config is unusable ({exc})") from None


def read_local_data(loaded: LoadedModel, data: Path, cfg: TrainConfig) -> LocalData:
    train_text, val_text = split_corpus(read_corpus(data), cfg.val_fraction)
    ids = [
        torch.tensor(loaded.tokenizer.encode(t), dtype=torch.long) for t in (train_text, val_text)
    ]
    for name, part in zip(("training", "validation"), ids, strict=True):
        if len(part) < cfg.seq_len + 2:
            raise DataError(f"{data}: the {name} split has {len(part)} tokens; it needs more text")
    return LocalData(ids[0], ids[1], val_text)


def examples_in(data: LocalData, cfg: TrainConfig) -> int:
    """Training windows in the local data: this node's weight in FedAvg."""
    return max(1, len(data.train) // cfg.seq_len)


def base_of(loaded: LoadedModel) -> str:
    """The sha256 of the pretrained base the model adapts; "" for a whole model (trained from
    scratch, or an imported base). What a round's plan names and the node's Hello reports."""
    base = loaded.base or {}
    return str(base.get("sha256", "")) if "adapter" in base else ""


def check_round_base(loaded: LoadedModel, expected: str | None) -> None:
    """Refuse a round whose plan expects another kind of model than this one (None: no check).

    The hub picks a round's members by the base their Hello reported; with this, a node whose
    model is not what it reported takes no part: adapters of another base have the same names
    and shapes, and would average without an error into weights that mean nothing on either."""
    own = base_of(loaded)
    if expected is None or own == expected:
        return
    is_ = f"adapts base {own[:12]}…" if own else "is a whole model"
    wants = f"adapters of base {expected[:12]}…" if expected else "whole models"
    raise ConfigError(
        f"this node's model {is_}, but this round averages {wants}; it takes no part (a round "
        "averages one kind of weights)"
    )


def _own_state(model: SLM) -> dict[str, torch.Tensor]:
    """What a round trains and averages: the whole model, or an adapted model's adapter."""
    return lora.adapter_state(model) if lora.has_adapters(model) else model.state_dict()


def weights_of(model: SLM) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in _own_state(model).items()}


def apply_weights(model: SLM, weights: dict[str, np.ndarray]) -> None:
    """Load global weights; any missing, extra or misshapen tensor is a ConfigError."""
    own = _own_state(model)
    if set(weights) != set(own):
        missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        raise ConfigError(f"global weights do not fit this model: missing {missing}, extra {extra}")
    for name, tensor in own.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise ConfigError(
                f"global weight {name} has shape {weights[name].shape}, "
                f"the model {tuple(tensor.shape)}"
            )
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in weights.items()},
        strict=not lora.has_adapters(model),
    )


@dataclass(frozen=True)
class LocalUpdate:
    weights: dict[str, np.ndarray]
    num_examples: int
    train_loss: float  # mean over the local steps
    val_loss: float  # on the node's validation split, after training
    steps: int
    setup_s: float  # loading the model and the data
    train_s: float  # the steps and the validation


def local_train(
    folder: Path,
    data: Path,
    global_weights: dict[str, np.ndarray] | None,
    steps: int,
    round_seed: int = 0,
    expected_base: str | None = None,
) -> LocalUpdate:
    """Start from the global weights (or the node's own when there are none yet), train `steps`
    steps on the node's data at a constant rate, and return the new weights. `expected_base`:
    the base the round's plan names (check_round_base)."""
    if steps <= 0:
        raise ConfigError(f"local steps must be positive, got {steps}")
    began = time.perf_counter()
    loaded = load_model_folder(folder)
    check_round_base(loaded, expected_base)
    cfg = train_config_of(loaded)
    cfg = replace(cfg, seed=cfg.seed + 7919 * round_seed)  # other batches every round
    local = read_local_data(loaded, data, cfg)
    model = loaded.model
    if global_weights is not None:
        apply_weights(model, global_weights)
    model.train()
    ready = time.perf_counter()
    optimizer = make_optimizer(model, cfg)
    for group in optimizer.param_groups:
        group["lr"] = cfg.learning_rate * LOCAL_LR_FACTOR
    bos, device = loaded.tokenizer.bos_id, torch.device("cpu")
    total = 0.0
    for step in range(steps):
        x, y = get_batch(local.train, cfg, step, bos, device)
        value = train_step(model, optimizer, x, y, cfg, step)
        if not math.isfinite(value):
            raise ConfigError(f"local training diverged: loss {value} at step {step + 1}")
        total += value
    val_loss = evaluate(model, local.val, cfg, bos, device)
    return LocalUpdate(
        weights_of(model), examples_in(local, cfg), total / steps, val_loss, steps,
        setup_s=ready - began, train_s=time.perf_counter() - ready,
    )  # fmt: skip


def validation_loss(folder: Path, data: Path, weights: dict[str, np.ndarray] | None) -> float:
    """The loss of these weights (or the folder's own) on the node's validation split."""
    loaded = load_model_folder(folder)
    cfg = train_config_of(loaded)
    if weights is not None:
        apply_weights(loaded.model, weights)
    local = read_local_data(loaded, data, cfg)
    return evaluate(loaded.model, local.val, cfg, loaded.tokenizer.bos_id, torch.device("cpu"))


def adopt(
    folder: Path, data: Path | None, weights: dict[str, np.ndarray], provenance: dict[str, Any],
    expected_base: str | None = None,
) -> tuple[str, float | None]:  # fmt: skip
    """Make `weights` the folder's model; returns (new version, validation loss on local data).

    Weights, calibration and config.json change as one (model_folder.replace_files): a crash
    leaves the old model or the new one, and the serving process, which waits for config.json
    to change, never loads new weights with the old calibration. Calibration is redone on the
    node's validation text: confidence must describe the model that answers.
    """
    folder = Path(folder)
    loaded = load_model_folder(folder)
    check_round_base(loaded, expected_base)
    apply_weights(loaded.model, weights)
    loaded.model.eval()
    val_loss: float | None = None
    if data is not None:
        cfg = train_config_of(loaded)
        local = read_local_data(loaded, data, cfg)
        val_loss = evaluate(
            loaded.model, local.val, cfg, loaded.tokenizer.bos_id, torch.device("cpu")
        )
        quantiles = calibrate(loaded.model, loaded.tokenizer, calibration_passages(local.val_text))
    else:
        quantiles = loaded.quantiles
    weights = weights_bytes(loaded.model)
    training = {**loaded.training, "federated": provenance}
    config = config_bytes(loaded.config, loaded.domain, training, loaded.base)
    replace_files(folder, {
        WEIGHTS: weights, CALIBRATION: calibration_bytes(quantiles), CONFIG: config,
    })  # fmt: skip
    return model_version(hashlib.sha256(weights).hexdigest(), json.loads(config)), val_loss
