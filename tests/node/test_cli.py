"""The slm-node and slm-hub commands, run as processes the way a user runs them."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from harness import BIN, cli
from tests.conftest import CORPORA, ROOT

pytestmark = pytest.mark.slow  # the CLI as processes, and training

ORIGINAL_SLM_PARAMETERS = 63_037_440
SEED = ROOT / "tests" / "data" / "original_slm_config.json"


def _one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_info_of_the_standard_preset_matches_the_original_slm() -> None:
    result = cli("slm-node", "info", "--preset", "slm-63m", "--json")
    assert result.returncode == 0, result.stderr
    count = json.loads(result.stdout)["parameters"]
    assert abs(count / ORIGINAL_SLM_PARAMETERS - 1) < 0.005
    text = cli("slm-node", "info", "--preset", "slm-63m").stdout
    assert f"{count:,}" in text


def test_init_creates_an_identity_once(tmp_path: Path) -> None:
    home = tmp_path / "node"
    first = cli("slm-node", "init", "--home", str(home))
    assert first.returncode == 0, first.stderr
    key = home / "node_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (home / "node_key.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    node_id = first.stdout.split()[2]
    original = key.read_bytes()
    again = cli("slm-node", "init", "--home", str(home))
    assert again.returncode == 0 and node_id in again.stdout and "already" in again.stdout
    assert key.read_bytes() == original


def test_train_score_generate_and_info_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "node"
    trained = cli(
        "slm-node",
        "train",
        "--home",
        str(home),
        "--data",
        str(CORPORA / "law.txt"),
        "--domain",
        "law",
        "--preset",
        "slm-tiny",
        "--max-steps",
        "60",
        "--eval-interval",
        "20",
    )
    assert trained.returncode == 0, trained.stderr
    assert "trained law model" in trained.stdout
    assert "step 60/60" in trained.stderr  # progress, one line per validation off a terminal

    scored = cli(
        "slm-node", "score", "--home", str(home), "--json", "The licensee may redistribute the work"
    )
    assert scored.returncode == 0, scored.stderr
    score = json.loads(scored.stdout)
    assert score["domain"] == "law" and 0 <= score["confidence"] <= 1
    assert score["bits_per_byte"] > 0

    generated = cli(
        "slm-node",
        "generate",
        "--home",
        str(home),
        "-",
        "--max-tokens",
        "20",
        "--seed",
        "1",
        stdin="The licensee",
    )
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.strip()

    info = cli("slm-node", "info", "--home", str(home))
    assert info.returncode == 0 and "domain      law" in info.stdout

    again = cli(
        "slm-node",
        "train",
        "--home",
        str(home),
        "--data",
        str(CORPORA / "law.txt"),
        "--domain",
        "law",
        "--preset",
        "slm-tiny",
    )
    _one_line_error(again, "already holds a trained model")


def test_train_with_the_original_slm_config(tmp_path: Path) -> None:
    config = json.loads(SEED.read_text())
    config["SLMOtak"].update(input_dim=32, output_dim=32, num_heads=2, num_layers=1)
    config["main"].update(num_epochs=1, batch_size=8)
    config["SLM"]["training_dataset_filename"] = str(CORPORA / "religion.txt")
    path = tmp_path / "slm.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "model"
    result = cli(
        "slm-node",
        "train",
        "--config",
        str(path),
        "--preset",
        "slm-tiny",
        "--domain",
        "religion",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "api_endpoint ignored" in result.stderr
    shape = json.loads((out / "config.json").read_text())["model"]
    assert (shape["d_model"], shape["n_layer"]) == (32, 1)


@pytest.fixture
def bad_files(tmp_path: Path) -> Path:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    (tmp_path / "bad.json").write_text('{"SLMOtak": {"num_layer": 4}}')
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "{d}/missing.txt", "--domain", "x"], "does not exist"),
        (["train", "--data", "{d}/empty.txt", "--domain", "x"], "is empty"),
        (["train", "--data", "{d}/latin1.txt", "--domain", "x"], "not UTF-8"),
        (
            ["train", "--data", "{d}/empty.txt", "--domain", "x", "--config", "{d}/bad.json"],
            "SLMOtak.num_layer",
        ),
        (["score", "hello", "--model", "{d}/broken-model"], "missing model.safetensors"),
        (["score", "hello", "--model", "{d}/no-model"], "does not exist"),
        (["score", "", "--model", "{d}/broken-model"], "prompt is empty"),
        (["generate", "hi", "--max-tokens", "0", "--model", "{d}/broken-model"], "max_tokens"),
        (["generate", "hi", "--seed", str(2**64), "--model", "{d}/broken-model"], "seed"),
        (
            ["train", "--data", "{d}/empty.txt", "--domain", "x", "--config", "{d}"],
            "Is a directory",
        ),
    ],
)
def test_bad_input_gets_one_line_and_writes_nothing(bad_files: Path, args, message) -> None:
    home = bad_files / "home"
    before = sorted(p.name for p in bad_files.iterdir())
    result = cli("slm-node", *[a.format(d=bad_files) for a in args], "--home", str(home))
    _one_line_error(result, message)
    assert sorted(p.name for p in bad_files.iterdir()) == before


def test_unknown_preset_is_a_usage_error() -> None:
    result = cli("slm-node", "info", "--preset", "slm-7b")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_prompt_that_is_not_utf8_is_refused(trained) -> None:
    folder = str(trained["law"].folder)
    result = subprocess.run(
        [str(BIN / "slm-node"), "score", "--model", folder, b"caf\xe9"],
        capture_output=True,
        text=True,
    )
    _one_line_error(result, "not valid UTF-8")
    piped = subprocess.run(
        [str(BIN / "slm-node"), "score", "--model", folder, "-"],
        input="caf\xe9".encode("latin-1"),
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert piped.returncode == 1 and b"not valid UTF-8" in piped.stderr
    assert b"Traceback" not in piped.stderr


def test_hub_help_teaches_every_command() -> None:
    helped = cli("slm-hub", "--help")
    assert helped.returncode == 0 and "serve" in helped.stdout and "train" in helped.stdout
    train = cli("slm-hub", "train", "--help")
    assert train.returncode == 0
    for word in ("--domain", "--min-nodes", "fedmedian", "trimmed-mean", "krum", "--timeout"):
        assert word in train.stdout
    no_hub = cli("slm-hub", "train", "--domain", "law", "--home", "/nonexistent/hub")
    _one_line_error(no_hub, "no hub is serving from /nonexistent/hub")
    joined = cli("slm-node", "join", "--help")
    assert joined.returncode == 0 and "--token" in joined.stdout and "backoff" in joined.stdout


def test_make_install_is_idempotent() -> None:
    """After `make install`, a second one has nothing to do (make --question exits 0)."""
    result = subprocess.run(["make", "--question", "install"], cwd=ROOT, capture_output=True)
    assert result.returncode == 0
