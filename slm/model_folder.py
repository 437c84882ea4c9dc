"""A trained model is one folder; this module writes it and loads it back, checking every file.

config.json        model shape, domain, training summary (written last: marks completion);
                   for an adapted model, its base (by name and sha256) and adapter shape
model.safetensors  weights (the tied head is stored once, as the token embedding); for an
                   adapted model, only the adapter: the base comes from slm.pretrained
tokenizer.json     byte-level BPE
chat_template.jinja  the instruct base's chat template, if it has one
calibration.json   validation bits-per-byte quantiles, for confidence
profile.npy        domain profile vector (slm.profile)
centroid.npy       the training text's sentence-vector centroid (slm.encoder), if the encoder
                   was installed: what the node reports its prompts' similarity to
words.json         the training text's word counts (slm.word_counts): the node's second claim
metrics.jsonl      one line per validation run
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from slm import lora, pretrained
from slm.atomic import atomic_write_bytes, atomic_write_text
from slm.config import ModelConfig, model_config_from_dict, model_config_to_dict
from slm.errors import ConfigError, ModelFolderError
from slm.model import SLM
from slm.profile import PROFILE_DIM
from slm.scoring import QUANTILE_LEVELS
from slm.serving import Precision, for_serving
from slm.tokenizer import CHAT_TEMPLATE, SLMTokenizer
from slm.version import model_version
from slm.word_counts import FILE as WORDS
from slm.word_counts import WordCounts, WordCountsError

FORMAT = "swarmllm-model/1"
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"
CALIBRATION, PROFILE, METRICS = "calibration.json", "profile.npy", "metrics.jsonl"
CENTROID = "centroid.npy"  # optional
REQUIRED = (CONFIG, WEIGHTS, TOKENIZER, CALIBRATION, PROFILE)


@dataclass
class LoadedModel:
    model: SLM
    tokenizer: SLMTokenizer
    config: ModelConfig
    domain: str
    quantiles: np.ndarray
    profile: np.ndarray
    version: str  # slm.version.model_version: what the node signs
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    base: dict[str, Any] | None = None  # config.json's "base": what an adapter sits on
    centroid: np.ndarray | None = None  # centroid.npy: the training text's sentence centroid
    words: WordCounts | None = None  # words.json: the training text's word counts


def weights_bytes(model: SLM) -> bytes:
    """The weights a folder owns: the whole model, or an adapted model's adapter alone."""
    if lora.has_adapters(model):
        state = lora.adapter_state(model)
    else:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_safetensors(state, metadata={"format": FORMAT})


def save_weights(folder: Path, model: SLM) -> None:
    atomic_write_bytes(Path(folder) / WEIGHTS, weights_bytes(model))


def save_tokenizer(folder: Path, tokenizer: SLMTokenizer) -> None:
    atomic_write_text(Path(folder) / TOKENIZER, tokenizer.to_json())
    if tokenizer.chat_template:
        atomic_write_text(Path(folder) / CHAT_TEMPLATE, tokenizer.chat_template)
    else:  # a template left by an earlier model must not wrap this one's prompts
        (Path(folder) / CHAT_TEMPLATE).unlink(missing_ok=True)


def calibration_bytes(quantiles: np.ndarray) -> bytes:
    calibration = {"levels": QUANTILE_LEVELS.tolist(), "bits_per_byte": quantiles.tolist()}
    return json.dumps(calibration, indent=1).encode()


def config_bytes(
    config: ModelConfig, domain: str, training: dict[str, Any],
    base: dict[str, Any] | None = None,
) -> bytes:  # fmt: skip
    """`base`: {"name", "sha256", "source", "adapter"} of an adapted model (or of a base
    imported whole, without "adapter")."""
    meta = {"format": FORMAT, "domain": domain, "model": model_config_to_dict(config),
            "training": training}  # fmt: skip
    if base is not None:
        meta["base"] = base
    return json.dumps(meta, indent=2).encode()


def finish_folder(
    folder: Path,
    config: ModelConfig,
    domain: str,
    quantiles: np.ndarray,
    profile: np.ndarray,
    training: dict[str, Any],
    base: dict[str, Any] | None = None,
    centroid: np.ndarray | None = None,
    words: WordCounts | None = None,
) -> None:
    """Write calibration, profile, the centroid and word counts if any and, last, config.json,
    which makes the folder loadable."""
    folder = Path(folder)
    atomic_write_bytes(folder / CALIBRATION, calibration_bytes(quantiles))
    atomic_write_bytes(folder / PROFILE, _npy(profile))
    if centroid is not None:
        atomic_write_bytes(folder / CENTROID, _npy(centroid))
    if words is not None:
        atomic_write_bytes(folder / WORDS, words.to_bytes())
    atomic_write_bytes(folder / CONFIG, config_bytes(config, domain, training, base))


def _npy(vector: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, vector.astype(np.float32))
    return buf.getvalue()


STAGED = ".next"  # suffix of a file staged by replace_files


def replace_files(folder: Path, files: dict[str, bytes]) -> None:
    """Replace several files of a model folder as one change, config.json among them.

    Each file is staged as NAME.next; config.json.next, written last, commits the change; the
    renames into place follow, config.json last. A crash before the commit leaves the old model
    (the writer clears stale staged files next time); after it, whoever opens the folder next
    finishes the renames (read_meta). Readers that only react to config.json changing (the
    serving process) never see new weights with old calibration.
    """
    folder = Path(folder)
    if CONFIG not in files:
        raise ValueError("replace_files needs config.json: it is the commit")
    for stale in folder.glob("*" + STAGED):
        stale.unlink(missing_ok=True)
    for name, data in files.items():
        if name != CONFIG:
            atomic_write_bytes(folder / (name + STAGED), data)
    atomic_write_bytes(folder / (CONFIG + STAGED), files[CONFIG])
    _finish_replacement(folder)


def _finish_replacement(folder: Path) -> None:
    """Move a committed change's staged files into place, config.json last (idempotent)."""
    if not (folder / (CONFIG + STAGED)).exists():
        return  # nothing committed: staged files, if any, belong to a writer still at work
    staged = sorted(folder.glob("*" + STAGED), key=lambda p: p.name == CONFIG + STAGED)
    for path in staged:
        with contextlib.suppress(FileNotFoundError):  # another process moved it first
            os.replace(path, folder / path.name[: -len(STAGED)])


def read_meta(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(
            f"model folder {folder} does not exist; train one with `slm-node train`"
        )
    _finish_replacement(folder)
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        hint = (
            "training did not finish; continue it with `slm-node train --resume`"
            if (folder / "checkpoint.pt").exists()
            else "it is not a complete model folder"
        )
        raise ModelFolderError(f"{folder} is missing {', '.join(missing)}: {hint}")
    try:
        meta = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{folder / CONFIG} is corrupted: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFolderError(f"{folder / CONFIG} is not a {FORMAT} model config")
    return meta


def load_model_folder(
    folder: Path, device: str | torch.device = "cpu", serving: Precision | None = None,
    base_paths: bool = True,
) -> LoadedModel:  # fmt: skip
    """Load and check a model folder; every defect is a ModelFolderError naming the file.

    With `serving`, the model comes in its inference-only serving form (slm.serving); without,
    as the trainable module. `base_paths=False` (a folder from someone else: the hub's auditor)
    accepts embedded bases only, never a path the folder names.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    try:
        config = model_config_from_dict(meta.get("model", {}))
    except ConfigError as exc:
        raise ModelFolderError(f"{folder / CONFIG}: {exc}") from None
    raw = (folder / WEIGHTS).read_bytes()
    try:
        state = load_safetensors(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelFolderError(f"{folder / WEIGHTS} is truncated or corrupted: {exc}") from None
    base = meta.get("base")
    adapted = isinstance(base, dict) and "adapter" in base
    if adapted:  # the config is the base's, checked before a model of it is built
        source = _base_source(folder, base, base_paths)
        check_base(folder, base, config, source)
    else:
        check_shape(folder, config, state)
    model = SLM.for_loading(config)
    try:
        if adapted:
            model.load_state_dict(pretrained.load(source).state, strict=True, assign=True)
            lora.add_adapters(model, lora.AdapterConfig.from_dict(base["adapter"]))
            lora.load_adapter(model, state)
            if serving is not None:
                lora.merge(model)
        else:
            model.load_state_dict(state, strict=True)
    except (RuntimeError, ConfigError) as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise ModelFolderError(f"{folder / WEIGHTS} does not match config.json: {first}") from None
    tokenizer = SLMTokenizer.load(folder / TOKENIZER)
    if tokenizer.largest_id >= config.vocab_size:
        raise ModelFolderError(
            f"{folder / TOKENIZER} has token ids up to {tokenizer.largest_id}, beyond the "
            f"model's vocab_size {config.vocab_size}"
        )
    quantiles = _read_calibration(folder / CALIBRATION)
    profile = _read_profile(folder / PROFILE)
    centroid = _read_centroid(folder / CENTROID)
    words = read_words(folder / WORDS)
    model.eval()
    if serving == "int8":
        model = for_serving(model, "int8")  # CPU only
    else:
        model.to(device)
        if serving is not None:
            model = for_serving(model, serving)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        config=config,
        domain=str(meta.get("domain", "")),
        quantiles=quantiles,
        profile=profile,
        version=model_version(hashlib.sha256(raw).hexdigest(), meta),
        training=meta.get("training", {}),
        path=folder,
        base=base if isinstance(base, dict) else None,
        centroid=centroid,
        words=words,
    )


def check_shape(folder: Path, config: ModelConfig, state: dict[str, Any]) -> None:
    """The weights must be what the config describes before a model of it is built: a config of
    a billion layers would otherwise be allocated first, and the hub's auditor loads folders
    that nodes send."""
    held = sum(t.numel() for t in state.values())
    blocks = config.n_layer * max(1, config.n_experts)  # each at least one tensor of its own
    positions = config.block_size * config.head_dim  # rotary tables are built, not loaded
    if config.num_parameters() != held or blocks > len(state) or positions > held:
        raise ModelFolderError(
            f"{folder / CONFIG} describes {config.num_parameters():,} parameters in {blocks} "
            f"blocks ({positions:,} position values); {folder / WEIGHTS} holds {held:,} in "
            f"{len(state)} tensors"
        )


def _base_source(folder: Path, base: dict[str, Any], paths: bool) -> str:
    name = str(base.get("name", ""))
    if name in pretrained.EMBEDDED:
        return name
    if not paths:
        raise ModelFolderError(f"{folder / CONFIG}: base {name!r} is not an embedded base")
    return str(base.get("source", ""))


def check_base(folder: Path, base: dict[str, Any], config: ModelConfig, source: str) -> None:
    """Check that the base an adapted folder names is here and is the one it was trained on."""
    try:
        found = pretrained.load(source)
    except ModelFolderError as exc:
        raise ModelFolderError(f"{folder / CONFIG}: its base is not available: {exc}") from None
    if found.sha256 != base.get("sha256"):
        raise ModelFolderError(
            f"{folder / CONFIG}: base {base.get('name')!r} here has sha256 "
            f"{found.sha256[:12]}…, but the adapter was trained on {str(base.get('sha256'))[:12]}…"
        )
    if found.config != config:
        raise ModelFolderError(f"{folder / CONFIG}: model shape differs from its base's")


def _read_calibration(path: Path) -> np.ndarray:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        values = np.asarray(data["bits_per_byte"], dtype=np.float64)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelFolderError(f"{path} is corrupted: {exc}") from None
    if values.shape != QUANTILE_LEVELS.shape or not np.all(np.isfinite(values)):
        raise ModelFolderError(f"{path} must hold {len(QUANTILE_LEVELS)} finite quantiles")
    if np.any(np.diff(values) < 0):
        raise ModelFolderError(f"{path}: quantiles are not sorted")
    return values


def _read_profile(path: Path) -> np.ndarray:
    try:
        profile = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ModelFolderError(f"{path} is truncated or corrupted: {exc}") from None
    if profile.shape != (PROFILE_DIM,) or not np.all(np.isfinite(profile)):
        raise ModelFolderError(f"{path} must hold {PROFILE_DIM} finite values")
    return profile.astype(np.float32)


def _read_centroid(path: Path) -> np.ndarray | None:
    """centroid.npy if the folder has one: a finite unit vector."""
    if not path.exists():
        return None
    try:
        centroid = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{path} is not a NumPy array: {exc}") from None
    if (
        centroid.ndim != 1
        or not np.all(np.isfinite(centroid))
        or not np.isclose(float(np.linalg.norm(centroid)), 1.0, atol=1e-3)
    ):
        raise ModelFolderError(f"{path} must hold one finite unit vector")
    return centroid.astype(np.float32)


def read_words(path: Path) -> WordCounts | None:
    """words.json if the folder has one."""
    if not path.exists():
        return None
    try:
        return WordCounts.from_bytes(path.read_bytes())
    except (OSError, WordCountsError) as exc:
        raise ModelFolderError(f"{path} is not a word counts file: {exc}") from None
