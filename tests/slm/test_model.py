from dataclasses import replace

import torch

from protos.wire import SamplingParams
from slm.config import ModelConfig, get_preset
from slm.generate import generate_ids
from slm.model import SLM, KVCache, SparseMoE
from slm.serving import quantize_int8, to_decode_layout

TINY = get_preset("slm-tiny").model


def _random_model(config: ModelConfig = TINY, dtype=torch.float64) -> SLM:
    torch.manual_seed(0)
    return SLM(config).to(dtype).eval()


def test_cached_forward_matches_full_forward_including_chunked_prefill() -> None:
    model = _random_model()
    ids = torch.randint(0, TINY.vocab_size, (2, 40))
    full = model(ids)
    cache = KVCache.empty(TINY, 2, torch.device("cpu"), torch.float64)
    pieces = [model(ids[:, :17], cache), model(ids[:, 17:30], cache)]
    pieces += [model(ids[:, t : t + 1], cache) for t in range(30, 40)]
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-10)


def test_greedy_generation_with_kv_cache_yields_exactly_the_uncached_tokens(trained) -> None:
    loaded = trained["medicine"].load()
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("Acute serous otitis media")]
    params = SamplingParams(max_tokens=TINY.block_size - len(prompt), temperature=0)
    cached = list(generate_ids(loaded.model, prompt, params, use_cache=True))
    uncached = list(generate_ids(loaded.model, prompt, params, use_cache=False))
    assert len(cached) == params.max_tokens
    assert cached == uncached


def test_generation_past_the_block_rebuilds_the_cache_and_goes_on() -> None:
    model = _random_model(dtype=torch.float32)
    params = SamplingParams(max_tokens=2 * TINY.block_size, temperature=1.0, seed=3)
    tokens = list(generate_ids(model, [0, 5, 6], params))
    assert len(tokens) == 2 * TINY.block_size


def test_moe_routes_each_token_to_its_top_k_experts_and_mixes_them_by_gate() -> None:
    config = get_preset("slm-tiny-moe").model
    moe = SparseMoE(config).double()
    x = torch.randn(3, 5, config.d_model, dtype=torch.float64)
    out = moe(x)
    flat = x.reshape(-1, config.d_model)
    probs = torch.softmax(moe.gate(flat), dim=-1)
    top_p, top_i = probs.topk(config.top_k, dim=-1)
    expected = torch.stack(
        [
            sum(
                (top_p[n, j] / top_p[n].sum()) * moe.experts[int(top_i[n, j])](flat[n])
                for j in range(config.top_k)
            )
            for n in range(flat.size(0))
        ]
    )
    assert torch.allclose(out.reshape(-1, config.d_model), expected, atol=1e-10)
    assert moe.aux_loss.item() > 0


def test_moe_aux_loss_is_positive_and_enters_the_training_loss() -> None:
    model = SLM(get_preset("slm-tiny-moe").model).train()
    ids = torch.randint(0, 1024, (2, 16))
    loss = model.loss(ids[:, :-1], ids[:, 1:])
    aux = model.aux_loss()
    assert aux.item() > 0
    model.eval()
    assert loss.item() > model.loss(ids[:, :-1], ids[:, 1:]).item()


def test_int8_model_stays_close_to_fp32() -> None:
    model = _random_model(dtype=torch.float32)
    ids = torch.randint(0, TINY.vocab_size, (1, 20))
    reference = torch.log_softmax(model(ids), -1)
    quantised = torch.log_softmax(quantize_int8(model)(ids), -1)
    assert (reference.argmax(-1) == quantised.argmax(-1)).float().mean() > 0.8
    assert (reference - quantised).abs().mean() < 0.05


def test_decode_layout_computes_the_same_logits() -> None:
    model = _random_model(dtype=torch.float32)
    ids = torch.randint(0, TINY.vocab_size, (2, 30))
    with torch.no_grad():
        reference = model(ids)
        served = to_decode_layout(model)(ids)
    torch.testing.assert_close(served, reference, rtol=1e-4, atol=1e-5)


def test_cached_generation_keeps_a_prompt_longer_than_half_the_block(trained) -> None:
    loaded = trained["law"].load()
    ids = loaded.tokenizer.encode(trained["law"].held_out)[:100]
    assert TINY.block_size // 2 < len(ids) < TINY.block_size - 10
    prompt = [loaded.tokenizer.bos_id, *ids]
    params = SamplingParams(max_tokens=TINY.block_size - len(prompt), temperature=0)
    cached = list(generate_ids(loaded.model, prompt, params, use_cache=True))
    assert cached == list(generate_ids(loaded.model, prompt, params, use_cache=False))


def test_a_model_built_for_loading_computes_what_the_saved_one_did() -> None:
    """Built without drawing weights, then loaded: the same logits as the model saved, with
    learned positions and with rotary ones (whose tables are computed, never stored)."""
    for config in (TINY, replace(TINY, positions="rope")):
        saved = _random_model(config, dtype=torch.float32)
        loaded = SLM.for_loading(config)
        loaded.load_state_dict(saved.state_dict(), strict=True)
        ids = torch.randint(0, config.vocab_size, (2, 24))
        assert torch.equal(loaded.eval()(ids), saved(ids))


def test_a_model_for_loading_draws_nothing_and_leaves_other_threads_alone() -> None:
    """for_loading skips the random fill (the generator is left where it was) without the meta
    device's torch._dynamo import, 1.3 s in every process that loads a model; a model built
    meanwhile on another thread is initialised as usual."""
    import subprocess
    import sys
    import threading

    from slm.model import _NoRandomInit

    probe = (
        "import sys; from slm.config import get_preset; from slm.model import SLM\n"
        "SLM.for_loading(get_preset('slm-tiny').model)\n"
        "print('torch._dynamo' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stdout
    before = torch.get_rng_state()
    SLM.for_loading(TINY)
    assert torch.equal(torch.get_rng_state(), before)  # nothing was drawn
    other: list[float] = []
    with _NoRandomInit():
        thread = threading.Thread(target=lambda: other.append(SLM(TINY).wte.weight.std().item()))
        thread.start()
        thread.join()
    assert 0.015 < other[0] < 0.025  # GPT-2's N(0, 0.02)
