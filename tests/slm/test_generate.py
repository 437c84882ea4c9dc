import torch

from protos.wire import SamplingParams
from slm.config import get_preset
from slm.generate import generate_ids, stream_text
from slm.model import SLM


def test_stream_pieces_concatenate_to_the_decoded_completion(trained) -> None:
    loaded = trained["medicine"].load()
    params = SamplingParams(max_tokens=40, temperature=0)
    text = "".join(stream_text(loaded.model, loaded.tokenizer, "Acute", params))
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("Acute")]
    tokens = list(generate_ids(loaded.model, prompt, params))
    if loaded.tokenizer.bos_id in tokens:
        tokens = tokens[: tokens.index(loaded.tokenizer.bos_id)]
    assert text == loaded.tokenizer.decode(tokens)
    assert text


def test_stop_string_ends_the_stream_before_it(trained) -> None:
    loaded = trained["medicine"].load()
    free = "".join(
        stream_text(
            loaded.model, loaded.tokenizer, "Acute", SamplingParams(max_tokens=60, temperature=0)
        )
    )
    stop = free[10:13]
    assert stop and stop in free
    params = SamplingParams(max_tokens=60, temperature=0, stop=(stop,))
    stopped = "".join(stream_text(loaded.model, loaded.tokenizer, "Acute", params))
    assert stopped == free[: free.find(stop)]


def test_sampling_is_repeatable_with_a_seed_and_top_k_1_is_greedy(trained) -> None:
    loaded = trained["law"].load()
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("The licensee")]
    sampled = SamplingParams(max_tokens=30, temperature=1.0, top_p=0.9, seed=7)
    assert list(generate_ids(loaded.model, prompt, sampled)) == list(
        generate_ids(loaded.model, prompt, sampled)
    )
    greedy = list(generate_ids(loaded.model, prompt, SamplingParams(max_tokens=30, temperature=0)))
    top1 = SamplingParams(max_tokens=30, temperature=1.0, top_k=1, seed=1)
    assert list(generate_ids(loaded.model, prompt, top1)) == greedy


def test_ids_the_tokenizer_never_learnt_are_never_generated() -> None:
    """An unlearnt id decodes to nothing yet counts as a token: a node must not emit one (the
    hub believes a signed count only as far as the bytes it relayed)."""
    config = get_preset("slm-tiny").model
    torch.manual_seed(0)
    model = SLM(config).eval()
    learnt = config.vocab_size // 2  # a tokenizer that learnt half the model's rows
    with torch.no_grad():  # and the unlearnt rows (the tied head's) the likeliest by far
        model.wte.weight[:learnt] *= 0.01
        model.wte.weight[learnt:] *= 100
    prompt = [0, 5, 6]
    for params in (SamplingParams(max_tokens=40, temperature=2.0, seed=1),
                   SamplingParams(max_tokens=40, temperature=0)):  # fmt: skip
        assert any(t >= learnt for t in generate_ids(model, prompt, params))  # the trap works
        assert all(t < learnt for t in generate_ids(model, prompt, params, vocab=learnt))
