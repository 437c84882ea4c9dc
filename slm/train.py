"""Train a node's model on its own corpus, into a model folder, resumably.

The loop: AdamW, linear warmup then cosine decay, gradient clipping, validation every
`eval_interval` steps, early stopping when validation loss stops improving for `patience`
validations. Every validation writes `checkpoint.pt` atomically (weights, optimiser, step,
early-stopping state); every improvement writes the best weights to `model.safetensors`. The
batch at step s is a pure function of (seed, s), so a resumed run sees the same data a run that
never stopped would have seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from slm import lora
from slm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from slm.config import ModelConfig, TrainConfig
from slm.encoder import text_centroid
from slm.errors import ConfigError, DataError
from slm.model import SLM
from slm.model_folder import (
    METRICS,
    WEIGHTS,
    finish_folder,
    save_tokenizer,
    save_weights,
)
from slm.pretrained import Pretrained
from slm.profile import corpus_profile
from slm.scoring import calibrate, calibration_passages
from slm.tokenizer import SLMTokenizer
from slm.word_counts import WordCounts

_SPLIT_CHARS = 2000  # the corpus is cut into chunks of this size; every k-th goes to validation


@dataclass(frozen=True)
class TrainResult:
    steps: int
    best_val_loss: float
    stop_reason: str  # "max_steps", "early_stopping" or "stopped"
    tokens_seen: int
    elapsed_s: float


def read_corpus(path: Path) -> str:
    """The text of a file, or of every regular file under a folder (sorted), as UTF-8."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"training data {path} does not exist")
    if path.is_dir():  # hidden files and folders (.git, editor backups) are not data
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )  # fmt: skip
    else:
        files = [path]
    if not files:
        raise DataError(f"training data folder {path} holds no files")
    parts = []
    for f in files:
        raw = f.read_bytes()
        try:
            parts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{f} is not UTF-8 text (invalid byte at offset {exc.start}); "
                "convert it, e.g. `iconv -f latin1 -t utf-8`"
            ) from None
    text = "\n".join(parts)
    if not text.strip():
        raise DataError(f"training data {path} is empty")
    return text


def split_corpus(text: str, val_fraction: float) -> tuple[str, str]:
    """Interleaved split: every k-th chunk to validation, so both halves span the whole corpus."""
    chunks = [text[i : i + _SPLIT_CHARS] for i in range(0, len(text), _SPLIT_CHARS)]
    every = max(2, round(1 / val_fraction))
    if len(chunks) < every:
        raise DataError(
            f"training data is too small to split: {len(text)} characters; "
            f"give at least {every * _SPLIT_CHARS}"
        )
    val = [c for i, c in enumerate(chunks) if i % every == every - 1]
    train = [c for i, c in enumerate(chunks) if i % every != every - 1]
    return "".join(train), "".join(val)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.learning_rate * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def total_steps(cfg: TrainConfig, n_train_tokens: int) -> int:
    if cfg.max_epochs is None:
        return cfg.max_steps
    per_epoch = max(1, n_train_tokens // (cfg.batch_size * cfg.seq_len))
    return min(cfg.max_steps, math.ceil(cfg.max_epochs * per_epoch))


def make_optimizer(model: SLM, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (an adapted model's adapter alone), with weight
    decay on matrices only (not biases, norms)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95))


def windows(
    data: torch.Tensor, starts: list[int], seq_len: int, bos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets at these offsets. Each input starts with BOS in place of its first
    token, because scoring and generation always start with BOS: the model learns
    p(first token | BOS) (the domain's marginal) and never sees position 0 without it."""
    x = torch.stack([data[s : s + seq_len] for s in starts])
    y = torch.stack([data[s + 1 : s + 1 + seq_len] for s in starts])
    x[:, 0] = bos_id
    return x, y


def get_batch(
    data: torch.Tensor, cfg: TrainConfig, step: int, bos_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    starts = torch.randint(0, len(data) - cfg.seq_len - 1, (cfg.batch_size,), generator=gen)
    x, y = windows(data, starts.tolist(), cfg.seq_len, bos_id)
    return x.to(device), y.to(device)


def train_step(
    model: SLM,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    step: int,
) -> float:
    """One optimiser step on a batch; the loss before it. Dropout is seeded by (seed, step), so
    a resumed run, or a federated round replayed elsewhere, takes the same step."""
    torch.manual_seed(cfg.seed + step)
    loss = model.loss(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(
        [p for p in model.parameters() if p.requires_grad], cfg.grad_clip
    )
    optimizer.step()
    return loss.item()


@torch.no_grad()
def evaluate(
    model: SLM, val: torch.Tensor, cfg: TrainConfig, bos_id: int, device: torch.device
) -> float:
    """Mean loss over fixed, evenly spaced validation windows (the same windows every time)."""
    model.eval()
    n_windows = min(cfg.eval_batches * cfg.batch_size, (len(val) - 1) // cfg.seq_len)
    stride = (len(val) - cfg.seq_len - 1) / max(1, n_windows - 1)
    starts = [round(i * stride) for i in range(n_windows)]
    losses = []
    for i in range(0, len(starts), cfg.batch_size):
        group = starts[i : i + cfg.batch_size]
        x, y = windows(val, group, cfg.seq_len, bos_id)
        losses.append(float(model.loss(x.to(device), y.to(device))) * len(group))
    model.train()
    return sum(losses) / len(starts)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class _Progress:
    """What a run carries from step to step; a checkpoint keeps it."""

    step: int = 0
    best: float = math.inf  # best validation loss so far
    bad_evals: int = 0  # validations since the last improvement
    tokens_seen: int = 0
    elapsed: float = 0.0  # seconds of training before this process took over


@dataclass
class _Run:
    """What stays fixed while a run trains."""

    out: Path
    model: SLM
    optimizer: torch.optim.AdamW
    tokenizer: SLMTokenizer
    train_ids: torch.Tensor
    val_ids: torch.Tensor
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    digest: str  # of the corpus, so a resume on other data is refused
    device: torch.device
    started: float = 0.0  # perf_counter at which the run, resumes included, began
    base: dict[str, Any] | None = None  # an adapted model's base and adapter (config.json)


def train(
    text: str, domain: str, out: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
    resume: bool = False, device: torch.device | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[int], bool] | None = None,
    base: Pretrained | None = None, adapter: lora.AdapterConfig | None = None,
) -> TrainResult:  # fmt: skip
    """Train into model folder `out`; callbacks report progress, `should_stop(step)` interrupts.

    With `base`, the model is that pretrained base (its shape, tokenizer and chat template),
    frozen, with a low-rank `adapter` trained on top; `model_cfg` is ignored and the folder
    stores only the adapter. On resume the checkpoint's model config, base and corpus digest
    must match: resuming on other data would silently mix two runs.
    """
    out = Path(out)
    device = device or default_device()
    base_meta = None
    if base is not None:
        model_cfg, adapter = base.config, adapter or lora.AdapterConfig()
        base_meta = {"name": base.name, "sha256": base.sha256, "source": str(base.source),
                     "adapter": adapter.to_dict()}  # fmt: skip
    _check_run(domain, model_cfg, train_cfg)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    train_text, val_text = split_corpus(text, train_cfg.val_fraction)
    out.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(out / CHECKPOINT, model_cfg, digest, base_meta) if resume else None
    if base is not None:
        tokenizer = base.tokenizer
        if not resume:
            save_tokenizer(out, tokenizer)
            (out / METRICS).unlink(missing_ok=True)
    elif resume:
        tokenizer = SLMTokenizer.load(out / "tokenizer.json")
    else:
        tokenizer = SLMTokenizer.train([train_text], model_cfg.vocab_size)
        save_tokenizer(out, tokenizer)
        (out / METRICS).unlink(missing_ok=True)
    train_ids = _token_ids(tokenizer, train_text, "training", train_cfg)
    val_ids = _token_ids(tokenizer, val_text, "validation", train_cfg)

    torch.manual_seed(train_cfg.seed)
    model = SLM(model_cfg)
    if base is not None:
        model.load_state_dict(base.state, strict=True, assign=True)  # frozen: shared, not copied
        lora.add_adapters(model, adapter)
    model.to(device)
    optimizer = make_optimizer(model, train_cfg)
    progress = _Progress()
    if state is not None:
        _load_trainable(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        progress = _Progress(state["step"], state["best_val_loss"], state["bad_evals"],
                             state["tokens_seen"], state["elapsed_s"])  # fmt: skip
    run = _Run(out, model, optimizer, tokenizer, train_ids, val_ids, model_cfg, train_cfg, digest,
               device, time.perf_counter() - progress.elapsed, base_meta)  # fmt: skip
    reason = _loop(run, progress, on_step, on_eval, should_stop)
    result = TrainResult(progress.step, progress.best, reason, progress.tokens_seen,
                         time.perf_counter() - run.started)  # fmt: skip
    if reason != "stopped":
        _finish(run, result, text, val_text, domain)
    return result


def _check_run(domain: str, model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    if train_cfg.seq_len > model_cfg.block_size:
        raise ConfigError(
            f"seq_len {train_cfg.seq_len} exceeds the model's block_size {model_cfg.block_size}"
        )
    if not domain or not domain.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"domain must be a word like 'medicine' or 'case-law', got {domain!r}")


def _token_ids(tokenizer: SLMTokenizer, text: str, name: str, cfg: TrainConfig) -> torch.Tensor:
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    if len(ids) < cfg.seq_len + 2:
        raise DataError(
            f"{name} split has {len(ids)} tokens, fewer than seq_len + 2 "
            f"({cfg.seq_len + 2}); give more data or a smaller --seq-len"
        )
    return ids


def _loop(
    run: _Run, progress: _Progress, on_step: Callable[[int, int, float], None] | None,
    on_eval: Callable[[dict[str, Any]], None] | None, should_stop: Callable[[int], bool] | None,
) -> str:  # fmt: skip
    """Step until the end, early stopping or `should_stop`; why it ended."""
    cfg = run.train_cfg
    total = total_steps(cfg, len(run.train_ids))
    run.model.train()
    window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
    while progress.step < total:
        if should_stop is not None and should_stop(progress.step):
            return "stopped"
        lr = lr_at(progress.step, total, cfg)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(run.train_ids, cfg, progress.step, run.tokenizer.bos_id, run.device)
        loss_value = train_step(run.model, run.optimizer, x, y, cfg, progress.step)
        progress.step += 1
        progress.tokens_seen += x.numel()
        if not math.isfinite(loss_value):
            raise ConfigError(
                f"training diverged: loss is {loss_value} at step {progress.step}; lower "
                "--learning-rate and start over with --force"
            )
        window_loss += loss_value
        window_steps += 1
        if on_step is not None:
            on_step(progress.step, total, loss_value)
        if progress.step % cfg.eval_interval == 0 or progress.step == total:
            window = (window_loss / window_steps, window_steps * x.numel(), window_start)
            record = _validate(run, progress, lr, window)
            if on_eval is not None:
                on_eval({**record, "total_steps": total})
            window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
            if progress.bad_evals >= cfg.patience:
                return "early_stopping"
    return "max_steps"


def _validate(
    run: _Run, progress: _Progress, lr: float, window: tuple[float, int, float]
) -> dict[str, Any]:
    """Validate, keep the best weights, append the metrics record, then checkpoint (so a
    resumed run never lacks the record of a step it starts after); the record.

    `window`: the mean training loss, tokens and start time since the last validation.
    """
    val_loss = evaluate(run.model, run.val_ids, run.train_cfg, run.tokenizer.bos_id, run.device)
    now = time.perf_counter()
    improved = val_loss < progress.best - run.train_cfg.min_delta
    if improved:
        progress.best, progress.bad_evals = val_loss, 0
        save_weights(run.out, run.model)
    else:
        progress.bad_evals += 1
    progress.elapsed = now - run.started
    train_loss, tokens, window_start = window
    record = {
        "step": progress.step, "train_loss": round(train_loss, 5), "val_loss": round(val_loss, 5),
        "best_val_loss": round(progress.best, 5), "lr": lr,
        "tokens_per_s": round(tokens / (now - window_start), 1),
        "elapsed_s": round(progress.elapsed, 2),
    }  # fmt: skip
    _append_metrics(run.out / METRICS, record)
    save_checkpoint(run.out / CHECKPOINT, _trainable_state(run.model), run.optimizer,
                    run.model_cfg, run.digest, progress, run.base)  # fmt: skip
    return {**record, "improved": improved}


def _finish(run: _Run, result: TrainResult, text: str, val_text: str, domain: str) -> None:
    """The best weights, calibrated, and the rest of the model folder, config.json last."""
    out, model = run.out, run.model
    if not (out / WEIGHTS).exists():  # no validation ran (resumed at the end): keep current
        save_weights(out, model)
    _load_trainable(model, load_safetensors((out / WEIGHTS).read_bytes()))
    model.eval()
    quantiles = calibrate(model, run.tokenizer, calibration_passages(val_text))
    training = {
        **asdict(result),
        "train_config": asdict(run.train_cfg),
        "corpus_sha256": run.digest,
        "corpus_bytes": len(text.encode("utf-8")),
        "train_tokens": len(run.train_ids),
        "val_tokens": len(run.val_ids),
        "tokenizer_vocab": run.tokenizer.vocab_size,
        "device": str(run.device),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _append_metrics(out / METRICS, {"event": "done", **asdict(result)})
    finish_folder(out, run.model_cfg, domain, quantiles, corpus_profile(text), training, run.base,
                  text_centroid(text), WordCounts.of_text(text))  # fmt: skip


def _trainable_state(model: SLM) -> dict[str, torch.Tensor]:
    return lora.adapter_state(model) if lora.has_adapters(model) else model.state_dict()


def _load_trainable(model: SLM, state: dict[str, torch.Tensor]) -> None:
    if lora.has_adapters(model):
        lora.load_adapter(model, state)
    else:
        model.load_state_dict(state)


def _append_metrics(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
