"""A pretrained base as a model folder of its own, calibrated on a node's text: a node that
serves the base unchanged, and the peer that an adapter is measured against."""

from __future__ import annotations

import time
from pathlib import Path

from slm.encoder import text_centroid
from slm.model import SLM
from slm.model_folder import finish_folder, save_tokenizer, save_weights
from slm.pretrained import Pretrained
from slm.profile import corpus_profile
from slm.scoring import calibrate, calibration_passages
from slm.train import split_corpus


def import_base(base: Pretrained, text: str, domain: str, out: Path, val_fraction: float = 0.1):
    """Write `base` whole into `out` (weights, tokenizer, chat template), its confidence
    calibrated on the validation split of `text`; config.json last."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _, val_text = split_corpus(text, val_fraction)
    model = SLM.for_loading(base.config)
    model.load_state_dict(base.state, strict=True)
    model.eval()
    save_tokenizer(out, base.tokenizer)
    save_weights(out, model)
    quantiles = calibrate(model, base.tokenizer, calibration_passages(val_text))
    training = {
        "imported_from": str(base.source),
        "corpus_bytes": len(text.encode("utf-8")),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta = {"name": base.name, "sha256": base.sha256, "source": str(base.source)}
    finish_folder(out, base.config, domain, quantiles, corpus_profile(text), training, meta,
                  text_centroid(text))  # fmt: skip
