"""What training on some data will take here: tokens by modality, and time per epoch from this
machine's measured training throughput (the original SLM's data-size estimate, made concrete).

Text is counted exactly, by the model's own tokenizer. Images, audio and video are counted as
the tokens a multimodal encoder would make of them (the rates below); this network's models
read text only, so they are listed for planning and not trained on.
"""

from __future__ import annotations

import time
import wave
from dataclasses import dataclass
from pathlib import Path

import torch

from slm.config import ADAPTER_TRAIN, DEFAULT_BASE, TrainConfig, get_preset
from slm.errors import DataError

IMAGE = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
AUDIO = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus"}
VIDEO = {".mp4", ".mkv", ".avi", ".mov", ".webm"}
IMAGE_TOKENS = 256  # a 16x16 patch grid (a ViT-style encoder at 256x256 pixels)
AUDIO_TOKENS_PER_S = 25  # a neural audio codec's frame rate
COMPRESSED_AUDIO_BYTES_PER_S = 16_000  # 128 kbit/s, when the file has no readable duration
VIDEO_BYTES_PER_S = 312_500  # 2.5 Mbit/s: the original's 20 MB social-media clips, ~1 minute
VIDEO_TOKENS_PER_S = IMAGE_TOKENS + AUDIO_TOKENS_PER_S  # a frame a second, and its sound


@dataclass
class Row:
    modality: str
    files: int = 0
    bytes: int = 0
    tokens: int = 0
    seconds: float = 0.0  # of audio or video


@dataclass
class Plan:
    path: Path
    model: str
    parameters: int
    rows: list[Row]
    tokens_per_s: float  # measured training throughput here
    train_tokens: int  # text tokens in the training split (90%)
    cfg: TrainConfig

    @property
    def epoch_s(self) -> float:
        return self.train_tokens / self.tokens_per_s


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )  # fmt: skip
    if not files:
        raise DataError(f"{path} holds no files")
    return files


def _audio_seconds(path: Path) -> float:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        return path.stat().st_size / COMPRESSED_AUDIO_BYTES_PER_S


def count(files: list[Path], encode) -> dict[str, Row]:
    """Rows by modality for these files; text tokens by `encode`."""
    rows = {m: Row(m) for m in ("text", "image", "audio", "video", "other")}
    for f in files:
        size, suffix = f.stat().st_size, f.suffix.lower()
        if suffix in IMAGE:
            row, tokens, seconds = rows["image"], IMAGE_TOKENS, 0.0
        elif suffix in AUDIO:
            seconds = _audio_seconds(f)
            row, tokens = rows["audio"], round(seconds * AUDIO_TOKENS_PER_S)
        elif suffix in VIDEO:
            seconds = size / VIDEO_BYTES_PER_S
            row, tokens = rows["video"], round(seconds * VIDEO_TOKENS_PER_S)
        else:
            try:
                text = f.read_bytes().decode("utf-8")
                row, tokens, seconds = rows["text"], len(encode(text)), 0.0
            except UnicodeDecodeError:
                row, tokens, seconds = rows["other"], 0, 0.0
        row.files += 1
        row.bytes += size
        row.tokens += tokens
        row.seconds += seconds
    return rows


def _throughput(model: torch.nn.Module, cfg: TrainConfig, vocab: int, steps: int = 2) -> float:
    """Training tokens per second of `model` here: one warm-up step, then `steps` timed."""
    from slm.train import make_optimizer

    model.train()
    optimizer = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len + 1), generator=gen)
    started = 0.0
    for i in range(steps + 1):
        if i == 1:
            started = time.perf_counter()
        loss = model.loss(x[:, :-1], x[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * cfg.batch_size * cfg.seq_len / (time.perf_counter() - started)


def plan(path: Path, base: str | None = None, preset: str | None = None) -> Plan:
    """Count the data (before loading any model: a bad path fails at once), then measure."""
    from slm import lora, pretrained
    from slm.model import SLM

    files = _files(Path(path))
    if preset is not None:
        from slm.tokenizer import SLMTokenizer
        from slm.train import read_corpus

        p = get_preset(preset)
        text_files = [f for f in files if f.suffix.lower() not in IMAGE | AUDIO | VIDEO]
        sample = read_corpus(text_files[0])[:200_000] if text_files else "plan"
        tokenizer = SLMTokenizer.train([sample], p.model.vocab_size)
        model, cfg, name = SLM(p.model), p.train, preset
    else:
        b = pretrained.load(base or DEFAULT_BASE)
        tokenizer, cfg, name = b.tokenizer, ADAPTER_TRAIN, b.name
        model = SLM(b.config)
        model.load_state_dict(b.state)
        lora.add_adapters(model, lora.AdapterConfig())
    rows = count(files, tokenizer.encode)
    text_tokens = rows["text"].tokens
    if not text_tokens:
        raise DataError(f"{path} holds no UTF-8 text to train on")
    speed = _throughput(model, cfg, tokenizer.vocab_size)
    found = [r for r in rows.values() if r.files]
    params = model.config.num_parameters()
    return Plan(Path(path), name, params, found, speed, round(0.9 * text_tokens), cfg)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render(p: Plan) -> str:
    lines = [f"data      {p.path}", "",
             f"{'modality':<9} {'files':>7} {'size':>10} {'tokens':>12}  note"]  # fmt: skip
    notes = {
        "text": "trained on",
        "image": f"{IMAGE_TOKENS} tokens per image; not trained on (text models)",
        "audio": f"{AUDIO_TOKENS_PER_S} tokens per second; not trained on (text models)",
        "video": f"{VIDEO_TOKENS_PER_S} tokens per second; not trained on (text models)",
        "other": "not UTF-8 text nor a known media type; skipped",
    }
    for r in p.rows:
        extra = f", {_duration(r.seconds)}" if r.seconds else ""
        lines.append(f"{r.modality:<9} {r.files:>7,} {r.bytes / 1e6:>8.2f} MB {r.tokens:>12,}  "
                     f"{notes[r.modality]}{extra}")  # fmt: skip
    lines += [
        "",
        f"model     {p.model} ({p.parameters / 1e6:.1f}M parameters), batch {p.cfg.batch_size} x "
        f"{p.cfg.seq_len} tokens",
        f"measured  {p.tokens_per_s:,.0f} training tokens/s on {torch.get_num_threads()} threads",
        f"epoch     {p.train_tokens:,} training tokens (90% of the text): {_duration(p.epoch_s)}",
    ]
    steps_s = p.cfg.batch_size * p.cfg.seq_len / p.tokens_per_s
    if p.cfg.max_epochs:
        total = min(p.cfg.max_epochs * p.epoch_s, p.cfg.max_steps * steps_s)
        lines.append(f"training  {p.cfg.max_epochs:g} epochs by default: about {_duration(total)}")
    else:
        lines.append(f"training  {p.cfg.max_steps:,} steps by default: about "
                     f"{_duration(p.cfg.max_steps * steps_s)}, less if it stops early")  # fmt: skip
    return "\n".join(lines)
