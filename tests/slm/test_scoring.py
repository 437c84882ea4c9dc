import math

import numpy as np
import pytest
import torch

from slm.errors import SLMError
from slm.scoring import bits_per_byte, confidence, score, token_logprobs
from tests.conftest import TrainedDomain


def _bpb(domain_model: TrainedDomain, text: str) -> float:
    loaded = domain_model.load()
    return score(loaded.model, loaded.tokenizer, loaded.quantiles, text).bits_per_byte


def test_each_domain_model_knows_its_own_held_out_text_best(trained) -> None:
    medicine, law = trained["medicine"], trained["law"]
    med_text, law_text = medicine.held_out[:4000], law.held_out[:4000]
    assert _bpb(medicine, med_text) < _bpb(medicine, law_text)
    assert _bpb(law, law_text) < _bpb(law, med_text)


def test_confidence_is_higher_in_domain(trained) -> None:
    loaded = trained["law"].load()
    passage = trained["law"].held_out[:300]
    other = trained["medicine"].held_out[:300]
    own = score(loaded.model, loaded.tokenizer, loaded.quantiles, passage)
    foreign = score(loaded.model, loaded.tokenizer, loaded.quantiles, other)
    assert 0.0 <= foreign.confidence < own.confidence <= 1.0


def test_loglik_is_the_bos_conditioned_sum_and_bpb_follows_the_contract(trained) -> None:
    loaded = trained["medicine"].load()
    text = "Acute serous otitis media, recurrent, right ear"
    ids = loaded.tokenizer.encode(text)
    with torch.no_grad():
        logits = loaded.model(torch.tensor([[loaded.tokenizer.bos_id, *ids]]))[0]
    expected = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids)[:, None]).sum()
    s = score(loaded.model, loaded.tokenizer, loaded.quantiles, text)
    assert s.loglik == pytest.approx(float(expected), rel=1e-5)
    assert s.bits_per_byte == pytest.approx(-s.loglik / (len(text.encode()) * math.log(2)))


def test_prompts_longer_than_the_block_are_scored_through_windows(trained) -> None:
    loaded = trained["law"].load()
    long_text = trained["law"].held_out[:3000]
    ids = loaded.tokenizer.encode(long_text)
    assert len(ids) > 2 * loaded.config.block_size
    logp = token_logprobs(loaded.model, ids, loaded.tokenizer.bos_id)
    assert logp.shape == (len(ids),) and torch.isfinite(logp).all()
    # The first window's scores equal a plain forward pass over it.
    head = token_logprobs(loaded.model, ids[:100], loaded.tokenizer.bos_id)
    torch.testing.assert_close(logp[:100], head)


def test_confidence_reads_the_quantiles() -> None:
    quantiles = np.linspace(1.0, 3.0, 101)
    assert confidence(0.5, quantiles) == 1.0
    assert confidence(2.0, quantiles) == pytest.approx(0.5)
    assert confidence(9.0, quantiles) == 0.0
    assert bits_per_byte(-math.log(2) * 8, 8) == pytest.approx(1.0)


def test_empty_prompt_is_refused(trained) -> None:
    loaded = trained["law"].load()
    with pytest.raises(SLMError, match="empty"):
        score(loaded.model, loaded.tokenizer, loaded.quantiles, "")
