"""The hub's auditor process: `python -m node.auditor`, a scorer with no key and no network.

`slm-hub serve` starts it (the hub itself never imports torch and keeps its small memory) and
asks it, one JSON line per claim on stdin, to score a prompt with a model folder the hub
fetched from the node that signed the claim, the centroid the node's Hello committed to and the
word counts the hub fetched by the digest it committed to; it answers one JSON line per claim on
stdout: {"id", "loglik", "similarity", "offset_loglik", "offset_similarity", "words_loglik",
"offset_words"}; {"id", "invalid_words"} for counts that are not a valid words.json and
{"id", "invalid_model"} for a folder that does not load (the node's doing: it committed to the
counts and sent the folder); or {"id", "error"} for a failure of ours (a file the hub's store
lost, memory). It scores in fp32, the reference every serving precision is judged against, with
one torch thread, and keeps the last few models loaded with their offsets (slm/offsets.py:
seconds each, once per model and centroid).
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from slm.model_folder import LoadedModel
    from slm.offsets import Offsets

KEEP_MODELS = 4  # model folders kept loaded: audits come in runs of one node's claims
MESSAGE_CHARS = 500  # of an error: they quote the folder's content, and a reply is one line


class Unloadable(Exception):
    """The folder the node sent does not load or score."""


def ours(exc: BaseException) -> bool:
    """Whether a failure is the auditor's (its disk, its memory), not the folder's."""
    return isinstance(exc, OSError | MemoryError) or (
        isinstance(exc, RuntimeError) and "allocate" in str(exc)
    )


def load(folder: Path, centroid: np.ndarray) -> tuple[LoadedModel, Offsets]:
    """The folder's model in fp32 and its offsets on the calibration pool. A file missing is
    ours (the hub's store checked that the node sent each one), and so is an embedded base
    that will not load here; anything else the folder's content does is the node's."""
    from slm import pretrained
    from slm.model_folder import REQUIRED, load_model_folder, read_meta
    from slm.offsets import offsets, pool_vectors

    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}")
    vectors = pool_vectors() if len(centroid) else None
    try:
        base = read_meta(folder).get("base")
    except Exception as exc:
        raise exc if ours(exc) else Unloadable(_message(exc)) from None
    name = str(base.get("name", "")) if isinstance(base, dict) else ""
    if name in pretrained.EMBEDDED:
        pretrained.load(name)  # outside any try: an embedded base that fails here is ours
    try:
        model = load_model_folder(folder, serving="fp32", base_paths=False)
        found = offsets(model.model, model.tokenizer, centroid if len(centroid) else None,
                        vectors)  # fmt: skip
    except Exception as exc:
        raise exc if ours(exc) else Unloadable(_message(exc)) from None
    return model, found


def _message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + " ..."


def main() -> None:
    import numpy as np
    import torch

    from slm.encoder import shared_encoder
    from slm.offsets import words_offset
    from slm.scoring import score
    from slm.word_counts import WordCounts, WordCountsError

    torch.set_num_threads(1)
    loaded: OrderedDict[tuple[str, bytes], tuple[LoadedModel, Offsets]] = OrderedDict()
    counted: OrderedDict[str, tuple[WordCounts, float]] = OrderedDict()  # with their offset
    for line in sys.stdin:
        request = json.loads(line)
        words = str(request.get("words") or "")
        if words and words not in counted:
            try:
                counts = WordCounts.from_bytes(Path(words).read_bytes())
            except (WordCountsError, OSError) as exc:  # the node's counts; our disk
                kind = "invalid_words" if isinstance(exc, WordCountsError) else "error"
                reply = {"id": request.get("id"), kind: _message(exc)}
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()
                continue
            counted[words] = (counts, words_offset(counts))
            if len(counted) > KEEP_MODELS:
                counted.popitem(last=False)
        if words:
            counted.move_to_end(words)
        try:
            folder, prompt = str(request["folder"]), str(request["prompt"])
            centroid = np.asarray(request.get("centroid") or [], dtype=np.float32)
            key = (folder, centroid.tobytes())
            if key not in loaded:
                loaded[key] = load(Path(folder), centroid)
                if len(loaded) > KEEP_MODELS:
                    loaded.popitem(last=False)
            loaded.move_to_end(key)
            model, found = loaded[key]
            try:  # the hub's prompt, which every honest node scores: a failure is the folder's
                s = score(model.model, model.tokenizer, model.quantiles, prompt)
            except Exception as exc:
                raise exc if ours(exc) else Unloadable(_message(exc)) from None
            similarity = (float(shared_encoder().embed([prompt])[0] @ centroid)
                          if len(centroid) else 0.0)  # fmt: skip
            counts, offset_words = counted[words] if words else (None, 0.0)
            reply = {"id": request["id"], "loglik": s.loglik, "similarity": similarity,
                     "offset_loglik": found.loglik_per_byte,
                     "offset_similarity": found.similarity,
                     "words_loglik": 0.0 if counts is None else counts.loglik(prompt),
                     "offset_words": offset_words}  # fmt: skip
        except Unloadable as exc:
            reply = {"id": request.get("id"), "invalid_model": str(exc)}
        except Exception as exc:  # ours: a lost file, memory, a prompt we cannot read
            reply = {"id": request.get("id"), "error": _message(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
