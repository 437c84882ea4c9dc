"""A node's side of a round (slm/federated.py) and the serving process's hot swap
(node/adoption.py), on a copy of the session's slm-tiny law model."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hub.training.store import GlobalStore
from node.adoption import ModelWatcher
from node.identity import generate_key
from node.service import NodeService
from protos.signing import completion_bytes, verify
from protos.wire import SamplingParams
from slm.errors import ConfigError
from slm.federated import adopt, apply_weights, base_of, local_train, validation_loss, weights_of
from slm.model_folder import load_model_folder
from tests.conftest import held_out_split


@pytest.fixture
def law(trained, tmp_path: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    folder = tmp_path / "law"
    shutil.copytree(trained["law"].folder, folder)
    data = tmp_path / "law.txt"
    data.write_text(held_out_split("law")[0][:40_000], encoding="utf-8")
    return folder, data


def test_local_training_is_reproducible_and_moves_the_global_weights(law) -> None:  # type: ignore[no-untyped-def]
    folder, data = law
    start = weights_of(load_model_folder(folder).model)
    one = local_train(folder, data, start, steps=3, round_seed=1)
    again = local_train(folder, data, start, steps=3, round_seed=1)
    other_round = local_train(folder, data, start, steps=3, round_seed=2)
    assert all(np.array_equal(one.weights[k], again.weights[k]) for k in start)
    assert any(not np.array_equal(one.weights[k], other_round.weights[k]) for k in start)
    assert any(not np.allclose(one.weights[k], start[k]) for k in start)
    assert one.num_examples > 100 and one.steps == 3
    assert np.isfinite(one.train_loss) and np.isfinite(one.val_loss)
    # The folder itself is not touched by training: only adoption writes it.
    assert all(
        np.array_equal(start[k], v) for k, v in weights_of(load_model_folder(folder).model).items()
    )


def test_adopting_writes_a_loadable_folder_whose_version_is_the_hubs_hash(law, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder, data = law
    update = local_train(folder, data, None, steps=2)
    sha = GlobalStore(tmp_path / "hub").save("law", update.weights)
    version, val_loss = adopt(folder, data, update.weights, {"run_id": 1, "round": 1})
    assert version == sha[:16]  # the node serves exactly the stored global model
    loaded = load_model_folder(folder)
    assert loaded.version == version and loaded.domain == "law"
    assert json.loads((folder / "config.json").read_text())["training"]["federated"]["round"] == 1
    assert val_loss == pytest.approx(validation_loss(folder, data, None), rel=1e-5)


def test_weights_that_do_not_fit_the_model_are_refused(law) -> None:  # type: ignore[no-untyped-def]
    folder, _ = law
    model = load_model_folder(folder).model
    weights = weights_of(model)
    weights["wte.weight"] = weights["wte.weight"][:, :-1]
    with pytest.raises(ConfigError, match=r"wte\.weight has shape"):
        apply_weights(model, weights)
    del weights["wte.weight"]
    with pytest.raises(ConfigError, match=re.escape("missing ['wte.weight']")):
        apply_weights(model, weights)


SMOL = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # a base's sha256


def test_a_whole_model_takes_no_part_in_a_round_of_adapters(law) -> None:  # type: ignore[no-untyped-def]
    folder, data = law
    before = (folder / "model.safetensors").read_bytes()
    assert base_of(load_model_folder(folder)) == ""
    refused = (
        "this node's model is a whole model, but this round averages adapters of base "
        "b179c9523d0e…; it takes no part (a round averages one kind of weights)"
    )
    with pytest.raises(ConfigError, match=re.escape(refused)):
        local_train(folder, data, None, steps=1, expected_base=SMOL)
    weights = weights_of(load_model_folder(folder).model)
    with pytest.raises(ConfigError, match=re.escape(refused)):
        adopt(folder, data, weights, {"round": 1}, expected_base=SMOL)
    assert (folder / "model.safetensors").read_bytes() == before  # nothing adopted
    assert local_train(folder, data, None, steps=1, expected_base="").steps == 1


@pytest.mark.slow  # the 135M-parameter embedded base under the adapter
def test_an_adapter_takes_part_only_in_rounds_of_its_own_base(law_adapter, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from slm import pretrained
    from slm.config import DEFAULT_BASE

    data = tmp_path / "law.txt"
    data.write_text(held_out_split("law")[0][:20_000], encoding="utf-8")
    loaded = load_model_folder(law_adapter)
    sha = pretrained.load(DEFAULT_BASE).sha256
    assert base_of(loaded) == sha  # what its Hello reports
    for expected, wants in (
        ("", "whole models"),
        ("7c1d0e" + "0" * 58, "adapters of base 7c1d0e000000…"),
    ):
        with pytest.raises(ConfigError, match=re.escape(
            f"this node's model adapts base {sha[:12]}…, but this round averages {wants}"
        )):  # fmt: skip
            local_train(law_adapter, data, None, steps=1, expected_base=expected)
    update = local_train(law_adapter, data, weights_of(loaded.model), steps=1, expected_base=sha)
    assert update.weights and all(k.endswith((".lora_a", ".lora_b")) for k in update.weights)


def test_the_serving_process_swaps_in_an_adopted_model_without_breaking_an_answer(law) -> None:  # type: ignore[no-untyped-def]
    folder, data = law
    service = NodeService(load_model_folder(folder), generate_key())
    old = service.loaded.version
    swapped, lines = asyncio.Event(), []
    prompt = "The licensee shall"
    answer = service.generate("r0", prompt, SamplingParams(max_tokens=12, temperature=0))
    first = next(answer)  # an answer is being streamed when the new model lands

    async def scenario() -> None:
        stop = asyncio.Event()
        watcher = ModelWatcher(folder, lambda: load_model_folder(folder), service, lines.append,
                               on_swap=swapped.set)  # fmt: skip
        task = asyncio.create_task(watcher.watch(stop))
        await asyncio.sleep(0.1)
        weights = local_train(folder, data, None, steps=1).weights
        await asyncio.to_thread(adopt, folder, data, weights, {"round": 1})
        await asyncio.wait_for(swapped.wait(), 30)
        stop.set()
        await task

    asyncio.run(scenario())
    rest = list(answer)
    assert rest[-1].done and rest[-1].model_version == old  # finished by the model it began with
    text = first.text + "".join(c.text for c in rest)
    statement = completion_bytes(service.node_id, "r0", prompt, text, rest[-1].tokens, old)
    assert verify(service.public_key, rest[-1].signature, statement)
    assert service.loaded.version != old
    assert lines == [f"adopted model {service.loaded.version} (was {old})"]
    score = service.score("r1", "The licensee shall")
    assert score.model_version == service.loaded.version


@pytest.mark.slow  # trains three rounds and two nodes alone
def test_three_fedavg_rounds_beat_either_node_trained_alone(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 5's learning claim, on the code the ClientApp and ServerApp run (without Flower's
    transport, which test_federated_rounds.py covers): two law nodes, each with half the
    corpus, 3 rounds of 20 local steps, against each node alone for 60 steps; loss on the held
    out tenth of the corpus, which neither node has."""
    from hub.training.aggregation import Update, aggregate
    from slm.federated import train_config_of
    from slm.train import evaluate

    seen, held_out = held_out_split("law")
    cut = seen.rfind("\n", 0, len(seen) // 2)
    data = {"a": tmp_path / "a.txt", "b": tmp_path / "b.txt"}
    data["a"].write_text(seen[:cut], encoding="utf-8")
    data["b"].write_text(seen[cut + 1 :], encoding="utf-8")
    folder = trained["law"].folder
    base = load_model_folder(folder)
    held = torch.tensor(base.tokenizer.encode(held_out))

    def held_out_loss(weights: dict[str, np.ndarray]) -> float:
        model = load_model_folder(folder).model
        apply_weights(model, weights)
        return evaluate(model, held, train_config_of(base), base.tokenizer.bos_id, "cpu")

    start = weights_of(base.model)
    global_weights = start
    for round_number in (1, 2, 3):
        updates = [local_train(folder, data[n], global_weights, 20, round_number) for n in data]
        global_weights = aggregate(
            [Update(n, u.weights, u.num_examples) for n, u in zip(data, updates, strict=True)],
            global_weights, "fedavg",
        )  # fmt: skip
    federated = held_out_loss(global_weights)
    alone = {n: held_out_loss(local_train(folder, data[n], start, 60, 1).weights) for n in data}
    assert federated < min(alone.values()), (federated, alone)
