"""The committed gRPC stubs are exactly what `make protos` generates from swarm.proto."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

GENERATED = ("swarm_pb2.py", "swarm_pb2.pyi", "swarm_pb2_grpc.py")


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    (tmp_path / "protos").mkdir()
    shutil.copy(ROOT / "protos" / "swarm.proto", tmp_path / "protos" / "swarm.proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--grpc_python_out=.",
         "--pyi_out=.", "protos/swarm.proto"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    for name in GENERATED:
        fresh = (tmp_path / "protos" / name).read_text()
        committed = (ROOT / "protos" / name).read_text()
        assert fresh == committed, f"protos/{name} is stale: run `make protos` and commit it"


def test_messages_round_trip() -> None:
    from protos import swarm_pb2

    reply = swarm_pb2.ScoreReply(request_id="r1", loglik=-12.5, bits_per_byte=0.9, confidence=0.7)
    message = swarm_pb2.NodeMessage(score=reply)
    decoded = swarm_pb2.NodeMessage.FromString(message.SerializeToString())
    assert decoded.WhichOneof("body") == "score" and decoded.score.loglik == -12.5
    ask = swarm_pb2.AskRequest(prompt="hi")
    assert not ask.HasField("sampling") and not ask.sampling.HasField("temperature")
