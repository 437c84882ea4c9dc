"""The wire types: one checked dataclass per concept, one conversion each way, and defaults the
proto documents truthfully."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from protos import swarm_pb2 as pb
from protos.errors import WireError
from protos.wire import Piece, SamplingParams, Score
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "bad",
    [
        {"max_tokens": 0},
        {"max_tokens": 10_000},
        {"temperature": -1},
        {"temperature": 5.5},
        {"top_p": 0},
        {"top_p": 1.01},
        {"top_k": -2},
        {"stop": ("",)},
        {"seed": 2**63},
    ],
)
def test_out_of_range_sampling_parameters_are_refused(bad: dict) -> None:
    with pytest.raises(WireError, match=next(iter(bad))):
        SamplingParams(**bad)


def test_sampling_parameters_round_trip_and_an_absent_field_is_the_default() -> None:
    params = SamplingParams(max_tokens=7, temperature=0.0, top_k=3, top_p=0.5, stop=("\n",), seed=9)
    assert SamplingParams.from_proto(params.to_proto()) == params
    assert SamplingParams.from_proto(pb.SamplingParams()) == SamplingParams()
    greedy = SamplingParams.from_proto(pb.SamplingParams(temperature=0.0))
    assert greedy.temperature == 0.0  # set to 0 means greedy, never "the default"
    with pytest.raises(WireError, match="max_tokens"):
        SamplingParams.from_proto(pb.SamplingParams(max_tokens=0))  # 0 is a value: refused


def test_swarm_proto_states_the_dataclass_defaults() -> None:
    """swarm.proto documents each sampling default; they must be the dataclass's."""
    proto = (ROOT / "protos" / "swarm.proto").read_text()
    block = proto[proto.index("message SamplingParams {") :]
    block = block[: block.index("}")]
    stated = dict(re.findall(r" (\w+) = \d+;.*default (\S+)$", block, re.M))
    defaults = {f.name: f.default for f in fields(SamplingParams)}
    assert {k: float(v) for k, v in stated.items()} == {k: float(defaults[k]) for k in stated}
    assert set(stated) == {"max_tokens", "temperature", "top_k", "top_p"}


def test_scores_and_pieces_round_trip_and_bound_what_a_node_claims() -> None:
    score = Score("r1", -12.5, 0.9, 0.7, False, b"sig", "0123456789abcdef", 3.5)
    assert Score.from_proto(score.to_proto()) == score
    piece = Piece("r1", "text", 4, True, b"sig", "0123456789abcdef", 8.0)
    assert Piece.from_proto(piece.to_proto()) == piece
    hostile = pb.GenerateChunk(request_id="r1", model_version="v" * 10_000, node_ms=float("inf"))
    got = Piece.from_proto(hostile)
    assert len(got.model_version) == 64 and got.node_ms == 0.0
    assert Score.from_proto(pb.ScoreReply(node_ms=-5.0)).node_ms == 0.0
