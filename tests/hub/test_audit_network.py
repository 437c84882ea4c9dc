"""The audit in a running network: `slm-hub serve --audit-rate 1` with three honest `slm-node
join` processes (medicine, law, religion) and a liar (harness/rogue.py) that serves the law
model, sends it to the auditor when asked, and claims every prompt 20% likelier than that
model gives. The liar wins until its first audited claim; then it is fined, its evidence is
kept, and it answers no more."""

from __future__ import annotations

import json
import sqlite3

import pytest

from harness import Hub, Node, ask, cli
from harness.processes import stop_all
from harness.rogue import Behaviour, Rogue
from hub.ledger.rewards import Rewards
from node.identity import generate_key
from node.service import NodeService
from protos.signing import verify
from slm.model_folder import load_model_folder
from slm.offsets import words_offset
from slm.scoring import score
from slm.word_counts import WordCounts

pytestmark = pytest.mark.slow  # real hub and node processes

DOMAINS = ("medicine", "law", "religion")


@pytest.fixture(scope="module")
def network(trained, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("audit")
    # Under a full suite on 2 cores the auditor loads and measures four models while the next
    # prompts are scored: a 2 s score deadline once dropped the liar from an answer's
    # candidates. What is tested is the audit, not the deadline, so the deadline is generous.
    hub = Hub(root / "hub", 0, "--audit-rate", "1", "--score-deadline", "10")
    nodes = {d: Node(root / f"node-{d}", trained[d].folder, hub, hub.token(d)) for d in DOMAINS}
    hub.wait_connected([n.node_id for n in nodes.values()])
    law = load_model_folder(trained["law"].folder, serving="fp32")
    honest = NodeService(law, generate_key())  # what the law model says, but for the lie

    def better_by_a_fifth(prompt: str) -> float:
        return 0.8 * score(law.model, law.tokenizer, law.quantiles, prompt).loglik

    liar = Rogue(hub.address, hub.ca.read_bytes(), hub.token("law"), "law", Behaviour(
        loglik=better_by_a_fifth, model=trained["law"].folder, version=law.version,
        similarity=honest.similarity, centroid=tuple(honest.centroid.tolist()),
        offset_loglik=honest.offsets.loglik_per_byte,
        offset_similarity=honest.offsets.similarity, words=honest.words.to_bytes(),
        words_loglik=honest.words.loglik, offset_words=honest.offsets.words_per_byte,
    ), profile=law.profile.tolist()).start()  # fmt: skip
    yield hub, nodes, liar
    liar.stop()
    stop_all(list(nodes.values()))  # they drain side by side, then the hub stops
    hub.stop()


def _balance(hub: Hub, node_id: str) -> int:
    shown = cli("slm-hub", "ledger", "balance", node_id, "--json", "--home", str(hub.home))
    assert shown.returncode == 0, shown.stderr
    [credits] = json.loads(shown.stdout).values()
    return round(float(credits) * 1_000_000)


def test_a_liar_wins_until_its_first_audit_then_never_again(network, trained) -> None:
    hub, nodes, liar = network
    prompts = [trained["law"].held_out[i : i + 300] for i in range(0, 3000, 500)]
    _, _, first = ask(hub, prompts[0], max_tokens=4)
    assert first.node_id == liar.node_id  # a fifth likelier than the honest law node's claim
    hub.wait_for(r"audit: node " + liar.node_id[:12] + r" false-score", timeout=120)
    for prompt in prompts[1:]:
        _, _, result = ask(hub, prompt, max_tokens=4)
        assert result.node_id == nodes["law"].node_id
        [seen] = [c for c in result.candidates if c.node_id == liar.node_id]
        assert seen.posterior == 0.0  # scored, and weighed nothing

    db = sqlite3.connect(hub.home / "hub.db")
    proofs = db.execute(
        "SELECT kind, statement, signature, claimed_loglik, audited_loglik FROM fraud_proofs "
        "WHERE node_id = ? ORDER BY created_at", (liar.node_id,),
    ).fetchall()  # fmt: skip
    assert proofs  # one per audited claim: it went on lying, and was fined each time
    for kind, statement, signature, claimed, audited in proofs:
        assert kind == "false-score" and claimed == pytest.approx(0.8 * audited, rel=1e-6)
        assert verify(liar.public, bytes.fromhex(signature), bytes.fromhex(statement))
    listed = json.loads(cli("slm-hub", "node", "list", "--json", "--home", str(hub.home),
                            check=True).stdout)  # fmt: skip
    assert {r["node_id"]: r["reputation"] for r in listed}[liar.node_id] == 0.0
    rewards = Rewards()
    assert _balance(hub, liar.node_id) < 0 < _balance(hub, nodes["law"].node_id)
    assert _balance(hub, liar.node_id) <= 2 * rewards.inference_base - rewards.audit_penalty
    verified = cli("slm-hub", "ledger", "verify", "--home", str(hub.home))
    assert verified.returncode == 0, verified.stderr


def test_honest_nodes_audited_on_every_claim_are_never_found_false(network, trained) -> None:
    hub, nodes, _ = network
    for domain in DOMAINS:
        for i in range(3):
            ask(hub, trained[domain].held_out[i * 400 : i * 400 + 250], max_tokens=2)
    db = sqlite3.connect(hub.home / "hub.db")
    honest_ids = [n.node_id for n in nodes.values()]
    marks = ",".join("?" * len(honest_ids))
    assert db.execute(f"SELECT COUNT(*) FROM fraud_proofs WHERE node_id IN ({marks})",
                      honest_ids).fetchone() == (0,)  # fmt: skip
    for domain in DOMAINS:  # their claims were audited: the auditor fetched each one's model
        loaded = load_model_folder(trained[domain].folder)  # and word counts
        kept = (hub.home / "audit" / "models").glob(f"{loaded.version}-*/model.safetensors")
        assert len(list(kept)) == 1  # the liar sent the same law folder: kept once
        assert (hub.home / "audit" / "models" / "words" / f"{loaded.words.sha256}.json").is_file()


def test_a_node_that_claims_likelier_words_than_its_counts_give_is_caught(network, trained
                                                                          ) -> None:  # fmt: skip
    """The word counts are a claim like the loglik: one a fifth likelier than the counts the
    node committed to is a fraud proof, so are claims under counts that are no counts file (they
    would otherwise stop every audit of the node), and counts it will not show are no evidence."""
    hub, nodes, _ = network
    medicine = load_model_folder(trained["medicine"].folder, serving="fp32")
    honest = NodeService(medicine, generate_key())

    def behaviour(**lie) -> Behaviour:  # type: ignore[no-untyped-def]
        said = {"words": honest.words.to_bytes(), "words_loglik": honest.words.loglik,
                "offset_words": honest.offsets.words_per_byte, **lie}  # fmt: skip
        return Behaviour(
            loglik=lambda p: honest.score("r", p).loglik, model=trained["medicine"].folder,
            version=medicine.version, similarity=honest.similarity,
            centroid=tuple(honest.centroid.tolist()), offset_loglik=honest.offsets.loglik_per_byte,
            offset_similarity=honest.offsets.similarity, **said,
        )  # fmt: skip

    likelier = Rogue(hub.address, hub.ca.read_bytes(), hub.token("medicine"), "medicine",
                     behaviour(words_loglik=lambda p: 0.8 * honest.words.loglik(p)),
                     profile=medicine.profile.tolist()).start()  # fmt: skip
    # counts of its own (the hub has none of that digest), which it will not show
    own = WordCounts.of_text(trained["medicine"].held_out)
    hidden = Rogue(hub.address, hub.ca.read_bytes(), hub.token("medicine"), "medicine",
                   behaviour(words=own.to_bytes(), words_loglik=own.loglik,
                             offset_words=words_offset(own), sends_words=b"{}"),
                   profile=medicine.profile.tolist()).start()  # fmt: skip
    broken = Rogue(hub.address, hub.ca.read_bytes(), hub.token("medicine"), "medicine",
                   behaviour(words=b"{}", words_loglik=lambda p: 0.0, offset_words=-1.3),
                   profile=medicine.profile.tolist()).start()  # fmt: skip
    try:
        ask(hub, trained["medicine"].held_out[:300], max_tokens=2)
        hub.wait_for(r"audit: node " + likelier.node_id[:12] + r" false-score", timeout=120)
        hub.wait_for(r"audit: node " + hidden.node_id[:12] + r" unavailable", timeout=120)
        hub.wait_for(r"audit: node " + broken.node_id[:12] + r" false-score \(its word counts "
                     r"\w+ are not valid", timeout=120)  # fmt: skip
    finally:
        for rogue in (likelier, hidden, broken):
            rogue.stop()
    db = sqlite3.connect(hub.home / "hub.db")
    details = [d for (d,) in db.execute("SELECT detail FROM fraud_proofs WHERE node_id = ?",
                                        (likelier.node_id,))]  # fmt: skip
    assert details and all("words_loglik" in d and "claimed loglik" not in d for d in details)
    assert db.execute("SELECT COUNT(*) FROM fraud_proofs WHERE node_id = ?",
                      (nodes["medicine"].node_id,)).fetchone() == (0,)  # fmt: skip
