"""The hub's auditor process: `python -m node.auditor`, a scorer with no key and no network.

`slm-hub serve` starts it (the hub itself never imports torch and keeps its small memory) and
asks it, one JSON line per claim on stdin, to score a prompt with a model folder the hub
fetched from the node that signed the claim; it answers one JSON line per claim on stdout:
{"id": ..., "loglik": ...} or {"id": ..., "error": ...}. It scores in fp32, the reference
every serving precision is judged against, with one torch thread, and keeps the last few
models loaded.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path

KEEP_MODELS = 4  # model folders kept loaded: audits come in runs of one node's claims


def main() -> None:
    import torch

    from slm.model_folder import LoadedModel, load_model_folder
    from slm.scoring import score

    torch.set_num_threads(1)
    loaded: OrderedDict[str, LoadedModel] = OrderedDict()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            folder = str(request["folder"])
            if folder not in loaded:
                loaded[folder] = load_model_folder(Path(folder), serving="fp32", base_paths=False)
                if len(loaded) > KEEP_MODELS:
                    loaded.popitem(last=False)
            loaded.move_to_end(folder)
            model = loaded[folder]
            s = score(model.model, model.tokenizer, model.quantiles, str(request["prompt"]))
            reply = {"id": request["id"], "loglik": s.loglik}
        except Exception as exc:  # a broken folder or prompt: the hub decides what it means
            reply = {"id": request.get("id"), "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
