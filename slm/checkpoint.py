"""A training run's checkpoint (checkpoint.pt) and the rules for the folder it trains into:
never overwrite a finished model or an unfinished run unless told, never resume on other data,
another shape or another base."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from slm.atomic import atomic_write_bytes
from slm.config import ModelConfig, model_config_from_dict, model_config_to_dict
from slm.errors import ConfigError, DataError
from slm.model_folder import CONFIG, METRICS, STAGED, WEIGHTS
from slm.tokenizer import CHAT_TEMPLATE

CHECKPOINT = "checkpoint.pt"


def prepare_out_dir(out: Path, resume: bool, force: bool) -> None:
    """Refuse to overwrite a trained model or an unfinished run unless told what to do."""
    out = Path(out)
    has_model = (out / CONFIG).exists()
    has_ckpt = (out / CHECKPOINT).exists()
    if resume:
        if not has_ckpt:
            raise ConfigError(f"nothing to resume: {out / CHECKPOINT} does not exist")
        # The weights are about to change: the folder is no longer a finished model until the
        # run completes and writes a matching calibration, profile and config.json.
        (out / CONFIG).unlink(missing_ok=True)
        return
    if force:
        for name in (CONFIG, CHECKPOINT, WEIGHTS, METRICS, CHAT_TEMPLATE):
            (out / name).unlink(missing_ok=True)
        for staged in out.glob("*" + STAGED):  # an adoption's leftovers must not land later
            staged.unlink()
        return
    if has_model:
        raise ConfigError(
            f"{out} already holds a trained model; pass --force to replace it, "
            "--resume to train it further, or --out for another folder"
        )
    if has_ckpt:
        raise ConfigError(
            f"{out} holds an unfinished training run; pass --resume to continue it "
            "or --force to start over"
        )


def save_checkpoint(
    path: Path, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
    model_cfg: ModelConfig, digest: str, progress: Any, base: dict[str, Any] | None,
) -> None:  # fmt: skip
    buf = io.BytesIO()
    torch.save(
        {
            "model": trainable,
            "base": base,
            "optimizer": optimizer.state_dict(),
            "model_config": model_config_to_dict(model_cfg),
            "corpus_sha256": digest,
            "step": progress.step,
            "best_val_loss": progress.best,
            "bad_evals": progress.bad_evals,
            "tokens_seen": progress.tokens_seen,
            "elapsed_s": progress.elapsed,
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(
    path: Path, model_cfg: ModelConfig, digest: str, base: dict[str, Any] | None
) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"nothing to resume: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged archives
        raise ConfigError(
            f"{path} is corrupted ({type(exc).__name__}); start over with --force"
        ) from None
    try:
        same_shape = model_config_from_dict(state.get("model_config") or {}) == model_cfg
    except ConfigError:
        same_shape = False
    if not same_shape:
        raise ConfigError(
            f"{path} was trained with another model shape; use the same --preset/--config"
        )
    if state.get("corpus_sha256") != digest:
        raise DataError(f"{path} was trained on other data; resume with the same --data")
    if _identity(state.get("base")) != _identity(base):
        raise ConfigError(f"{path} was trained on another base or adapter; use the same --base")
    return state


def _identity(base: dict[str, Any] | None) -> tuple[Any, Any] | None:
    """What makes two runs' bases the same: the base's sha256 and the adapter's shape (not the
    path it was read from: a reinstalled environment moves it)."""
    return None if base is None else (base.get("sha256"), base.get("adapter"))
