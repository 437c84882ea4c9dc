"""The fused fp32 CPU decode step (slm/csrc/decode_step.cpp): built on first use, then cached.

Decoding one token reads every weight once, so it is bound by memory bandwidth. Measured on
the reference CPU, the PyTorch path reaches ~45% of the read bandwidth: MKL's GEMV streams
from one core, and ~300 small ops per token add ~7 ms. One C++ call per token, with GEMV rows
split over torch's own thread pool, removes both (docs/benchmarks.md). Prefill and scoring
stay in PyTorch, whose GEMMs are fine. Where the extension cannot be built (no compiler, no
AVX2), `available()` is False and serving keeps the pure-PyTorch decode layout.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch

from slm.cache import cache_dir, key_of
from slm.model import MLP, SLM, KVCache

log = logging.getLogger(__name__)
_SOURCE = Path(__file__).resolve().parent / "csrc" / "decode_step.cpp"


_NAME = "slm_decode_step"
_FLAGS: dict[str, list[str]] = {
    "extra_cflags": ["-O3", "-mavx2", "-mfma", "-fopenmp"], "extra_ldflags": ["-fopenmp"],
}  # fmt: skip


@functools.cache
def _extension() -> ModuleType | None:
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    # Always build with the ninja installed beside this Python (a dependency): ninja versions
    # hash commands differently, so a system ninja found first on some PATHs would rebuild.
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    try:
        path = built_path()
        return _import(path) if path.exists() else _build(path)
    except Exception as exc:  # a missing compiler or ninja: serve without the fast path
        log.warning("fused decode step unavailable (%s); using the PyTorch path", exc)
        return None


def built_path() -> Path:
    """Where this source, its flags, torch and Python build to: inside this environment, named
    by their digest. Not torch's default folder, which is one per user and name: two checkouts
    rebuilt each other's extension there (its build file names the source's path), and a
    process killed while building left a lock that every later load waited on forever."""
    key = key_of({"source": hashlib.sha256(_SOURCE.read_bytes()).hexdigest(),
                  "torch": torch.__version__, "python": sys.version, **_FLAGS})  # fmt: skip
    # an environment this user cannot write to (a system Python): the user's cache instead
    writable = os.access(sys.prefix, os.W_OK)
    folder = Path(sys.prefix) / "swarmllm-extensions" if writable else cache_dir("extensions")
    return folder / f"{_NAME}-{key[:16]}.so"


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(path: Path) -> ModuleType:
    """Built in a folder of its own, then renamed into place whole: processes starting at once
    each build rather than wait on another's lock, and a killed build leaves only its folder."""
    from torch.utils.cpp_extension import load

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as folder:
        source = Path(folder) / _SOURCE.name
        shutil.copyfile(_SOURCE, source)
        module = load(name=_NAME, sources=[str(source)], build_directory=folder, **_FLAGS)
        os.replace(Path(folder) / f"{_NAME}.so", path)
    return module


def available() -> bool:
    return _extension() is not None


_GPT = ("layernorm", "learned", "gelu", True, True)
_LLAMA = ("rmsnorm", "rope", "swiglu", False)


def _family(model: SLM) -> str | None:
    c = model.config
    if (c.norm, c.positions, c.mlp, c.bias, c.tied_head) == _GPT:
        return "gpt"
    if (c.norm, c.positions, c.mlp, c.bias) == _LLAMA:
        return "llama"
    return None


def supports(model: SLM) -> bool:
    """Dense fp32 models of either family on the CPU (MoE blocks, quantised layers and mixed
    shapes take the PyTorch path)."""
    return (
        _family(model) is not None
        and model.wte.weight.dtype == torch.float32
        and model.wte.weight.device.type == "cpu"
        and all(isinstance(b.mlp, MLP) for b in model.blocks)
    )


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: weight ≈ q * scale[:, None]."""
    scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.float().contiguous()


class FusedDecoder:
    """Runs `SLM.forward` for one new token through the C++ step, writing the same KV cache.

    With int8=True it keeps its own int8 copy of every matrix and of the head (per-row scales),
    built from the fp32 model before that model is quantised for prefill.
    """

    def __init__(self, model: SLM, int8: bool = False) -> None:
        extension = _extension()
        if extension is None or not supports(model):
            raise ValueError("the fused decode step needs a dense fp32 CPU model and a compiler")
        self._model = model
        self._llama = _family(model) == "llama"
        self._step = extension.decode_step_llama if self._llama else extension.decode_step
        empty = torch.empty(0)
        self._layers: list[torch.Tensor] = []
        self._scales: list[torch.Tensor] = []
        for b in model.blocks:
            if self._llama:
                params = (b.ln_1.weight, b.attn.qkv.weight, b.attn.proj.weight, b.ln_2.weight,
                          b.mlp.fc.weight, b.mlp.proj.weight)  # fmt: skip
                matrices = (1, 2, 4, 5)
            else:
                params = (
                    b.ln_1.weight, b.ln_1.bias, b.attn.qkv.weight, b.attn.qkv.bias,
                    b.attn.proj.weight, b.attn.proj.bias, b.ln_2.weight, b.ln_2.bias,
                    b.mlp.fc.weight, b.mlp.fc.bias, b.mlp.proj.weight, b.mlp.proj.bias,
                )  # fmt: skip
                matrices = (2, 4, 8, 10)
            for i, t in enumerate(params):
                if i in matrices:
                    q, scale = quantize_rows(t.detach()) if int8 else (t.detach(), empty)
                    self._layers.append(q.contiguous())
                    self._scales.append(scale)
                else:
                    self._layers.append(t.detach())
        head = model.head_weight().detach()
        self._head, self._head_scale = quantize_rows(head) if int8 else (head, empty)
        self._wte = model.wte.weight.detach()
        self._wpe = None if model.wpe is None else model.wpe.weight.detach()
        self._ln_f = (model.ln_f.weight.detach(), getattr(model.ln_f, "bias", None),
                      model.ln_f.eps)  # fmt: skip
        assert all(t.is_contiguous() for t in self._layers)

    def __call__(self, token: int, cache: KVCache) -> torch.Tensor:
        """Logits (vocab,) for `token` at position cache.length; advances the cache by one."""
        ln_w, ln_b, eps = self._ln_f
        keys, values = [k[0] for k in cache.keys], [v[0] for v in cache.values]
        c = self._model.config
        if self._llama:
            logits = self._step(
                token, cache.length, self._wte, self._layers, self._scales, ln_w, self._head,
                self._head_scale, keys, values, self._model.rope_cos, self._model.rope_sin,
                c.n_head, c.kv_heads, eps,
            )  # fmt: skip
        else:
            logits = self._step(
                token, cache.length, self._wte, self._wpe, self._layers, self._scales, ln_w,
                ln_b, self._head, self._head_scale, keys, values, c.n_head, eps,
            )  # fmt: skip
        cache.length += 1
        return logits


if __name__ == "__main__":  # `make install` builds the extension once, so no command waits on it
    print(
        "fused decode step: built"
        if available()
        else "fused decode step: unavailable here; fp32 decoding uses the PyTorch path"
    )
