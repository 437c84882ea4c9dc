"""The fused C++ decode step computes what SLM.forward computes, and serving uses it."""

import copy
from dataclasses import replace

import pytest
import torch

from protos.wire import SamplingParams
from slm import fused
from slm.config import get_preset
from slm.generate import generate_ids
from slm.model import SLM, KVCache
from slm.serving import for_serving


def test_the_extension_builds_on_this_machine() -> None:
    assert fused.available(), "slm/csrc/decode_step.cpp did not build: fp32 decoding is slow"


def test_a_killed_build_or_a_stale_torch_lock_never_holds_up_a_later_process() -> None:
    """A build killed midway leaves its folder (with torch's lock in it), and torch's own
    per-user folder may hold a lock of any checkout's: a new process loads the built file
    without waiting on either."""
    import subprocess
    import sys
    from pathlib import Path

    from torch.utils.cpp_extension import _get_build_directory

    assert fused.available()
    built = fused.built_path()
    assert built.is_file() and built.parent.parent == Path(sys.prefix)
    killed = built.parent / ".build-killed"
    killed.mkdir(exist_ok=True)
    (killed / "lock").touch()
    torch_folder = Path(_get_build_directory("slm_decode_step", verbose=False))
    (torch_folder / "lock").touch()
    try:
        loaded = subprocess.run(
            [sys.executable, "-c", "from slm import fused; print(fused.available())"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        (torch_folder / "lock").unlink()
        (killed / "lock").unlink()
        killed.rmdir()
    assert loaded.stdout == "True\n", loaded.stderr


# A small Llama-family shape: RMSNorm, rotary positions, SwiGLU, 4 query heads over 2 key/value
# heads, no biases, an untied head: every branch of the Llama step.
LLAMA_TINY = replace(
    get_preset("slm-tiny").model, norm="rmsnorm", positions="rope", mlp="swiglu", n_kv_head=2,
    bias=False, tied_head=False, n_head=4, d_ff=96,
)  # fmt: skip


@pytest.mark.parametrize("cfg", [get_preset("slm-tiny").model, LLAMA_TINY], ids=["gpt", "llama"])
def test_fused_steps_match_the_pytorch_forward_and_fill_the_same_cache(cfg) -> None:
    torch.manual_seed(0)
    model = SLM(cfg).eval()
    step = fused.FusedDecoder(model)
    ids = torch.randint(0, cfg.vocab_size, (1, 60))
    with torch.inference_mode():
        reference = model(ids)[0]
        ref_cache = KVCache.empty(cfg, 1, torch.device("cpu"), torch.float32)
        model(ids, ref_cache)
        cache = KVCache.empty(cfg, 1, torch.device("cpu"), torch.float32)
        model(ids[:, :25], cache)  # prefill in PyTorch, then one token at a time in C++
        logits = torch.stack([step(int(ids[0, t]), cache) for t in range(25, 60)])
    torch.testing.assert_close(logits, reference[25:], rtol=1e-4, atol=1e-4)
    assert cache.length == 60
    torch.testing.assert_close(cache.keys[1][:, :, :60], ref_cache.keys[1][:, :, :60])
    torch.testing.assert_close(cache.values[0][:, :, :60], ref_cache.values[0][:, :, :60])


def test_fp32_serving_decodes_the_same_tokens_through_the_fused_step(trained) -> None:
    loaded = trained["law"].load()
    plain = copy.deepcopy(loaded.model)
    served = for_serving(loaded.model, "fp32")
    assert served.decode_one is not None
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("The licensee may")]
    params = SamplingParams(max_tokens=200, temperature=0)  # past the block: cache rebuilds
    assert list(generate_ids(served, prompt, params)) == list(generate_ids(plain, prompt, params))


def test_moe_models_keep_the_pytorch_path() -> None:
    assert not fused.supports(SLM(get_preset("slm-tiny-moe").model))


def test_int8_serving_decodes_through_its_own_int8_step(trained) -> None:
    loaded = trained["medicine"].load()
    plain = copy.deepcopy(loaded.model)
    served = for_serving(loaded.model, "int8")
    assert served.decode_one is not None
    ids = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode(trained["medicine"].held_out[:400])]
    ids = torch.tensor([ids[:60]])
    cfg = plain.config
    with torch.inference_mode():
        reference = torch.log_softmax(plain(ids)[0, 30:], -1)
        cache = KVCache.empty(cfg, 1, torch.device("cpu"), torch.float32)
        served(ids[:, :30], cache)
        logits = torch.stack([served.decode_one(int(ids[0, t]), cache) for t in range(30, 60)])
    quantised = torch.log_softmax(logits, -1)
    assert (reference.argmax(-1) == quantised.argmax(-1)).float().mean() > 0.9
    assert (reference.exp() * (reference - quantised)).sum(-1).mean() < 0.05  # KL(fp32 || int8)
    params = SamplingParams(max_tokens=200, temperature=0.8, seed=3)
    assert len(list(generate_ids(served, [loaded.tokenizer.bos_id, 5, 6], params))) == 200


def test_llama_int8_steps_stay_close_to_fp32() -> None:
    torch.manual_seed(1)
    model = SLM(LLAMA_TINY).eval()
    fp32, int8 = fused.FusedDecoder(model), fused.FusedDecoder(model, int8=True)
    ids = torch.randint(0, LLAMA_TINY.vocab_size, (40,)).tolist()
    caches = [KVCache.empty(LLAMA_TINY, 1, torch.device("cpu"), torch.float32) for _ in range(2)]
    with torch.inference_mode():
        a = torch.stack([fp32(t, caches[0]) for t in ids]).log_softmax(-1)
        b = torch.stack([int8(t, caches[1]) for t in ids]).log_softmax(-1)
    assert (a.exp() * (a - b)).sum(-1).mean() < 0.01  # KL(fp32 || int8)


def test_an_environment_the_user_cannot_write_builds_into_the_user_s_cache(
    monkeypatch, tmp_path
) -> None:  # fmt: skip
    from slm import cache

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(fused.os, "access", lambda path, mode: False)
    assert fused.built_path().parent == tmp_path / "extensions"
