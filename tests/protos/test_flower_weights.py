"""Weights in a training-plane message: what one side writes the other reads bit for bit, in
two Flower objects however many tensors; and every other record a hostile node or SuperLink
could send is refused with its reason (the hub turns it into that node's rejection)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from protos.flower_weights import BLOB, from_record, to_record

WEIGHTS = {f"blocks.{i}.attn.qkv.lora_a": np.full((2, 8), i, np.float32) for i in range(240)}


def blob(header: dict, body: bytes) -> ArrayRecord:
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + body
    return ArrayRecord({BLOB: Array(np.frombuffer(data, dtype=np.uint8))})


def test_weights_round_trip_as_one_array() -> None:
    record = to_record(WEIGHTS)
    assert list(record.keys()) == [BLOB]
    back = from_record(record)
    assert back.keys() == WEIGHTS.keys()
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in WEIGHTS.items())


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (ArrayRecord({"w": Array(np.zeros(3, np.float32))}), "not one 'safetensors' array"),
        (
            ArrayRecord({BLOB: Array(np.zeros(3, np.uint8)), "x": Array(np.zeros(1, np.uint8))}),
            "not one 'safetensors' array",
        ),
        (
            ArrayRecord(
                {BLOB: Array(dtype="uint8", shape=(4,), stype="pickle", data=b"\x80\x04N.")}
            ),
            "serialised as 'pickle'",
        ),
        (ArrayRecord({BLOB: Array(np.zeros(16, np.float32))}), "not a 1-D uint8 array"),
        (ArrayRecord({BLOB: Array(np.zeros((2, 8), np.uint8))}), "not a 1-D uint8 array"),
        (
            ArrayRecord({BLOB: Array(np.frombuffer(b"\xff" * 16, np.uint8))}),
            "not a safetensors blob",
        ),
        # a header that claims more bytes than it carries, or tensors that overlap
        (
            blob(
                {"w": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 1 << 22]}}, b"\0" * 8
            ),
            "not a safetensors blob",
        ),
        (
            blob(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                b"\0" * 12,
            ),
            "not a safetensors blob",
        ),
        (
            blob({"w": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
            "tensor w is int64, not a float type",
        ),
    ],
)
def test_any_other_record_is_refused_with_its_reason(record: ArrayRecord, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        from_record(record)
