"""The locked SuperLink's parts without a process (the processes: test_training_plane.py): the
Flower names it relies on still exist, the public port's filter, the Control API's check."""

from __future__ import annotations

import pytest

from hub.training.locked_superlink import TOKEN_ENV, control_plugin, public_path, superlink_cli


def test_the_flower_internals_the_launcher_uses_are_there() -> None:
    cli = superlink_cli()
    for name in ("_parse_superlink_lifespan_config", "SuperLinkLifespan",
                 "load_control_authn_plugin"):  # fmt: skip
        assert hasattr(cli, name), f"flwr moved {name}: see hub/training/locked_superlink.py"
    from flwr.superlink.main import create_app  # noqa: F401


@pytest.mark.parametrize(
    ("path", "public"),
    [
        ("/v1/fleet/pull-messages", True),
        ("/health", True),
        ("/v1/control/start-run", False),
        ("/v1/runtime/acquire-task", False),
        ("/docs", False),
        ("/openapi.json", False),
        ("/v1/fleet/../control/start-run", False),
        ("/v1/fleetx/register-node", False),
        ("/", False),
    ],
)
def test_the_public_port_serves_the_fleet_api_alone(path: str, public: bool) -> None:
    assert public_path(path) is public


def test_the_control_api_accepts_the_hub_s_secret_only(tmp_path, monkeypatch) -> None:
    from flwr.common.constant import ACCESS_TOKEN_KEY, NOOP_FLWR_AID

    secret = tmp_path / "control_token"
    secret.write_bytes(b"s" * 64)
    monkeypatch.setenv(TOKEN_ENV, str(secret))
    plugin = control_plugin()()
    ok, account = plugin.validate_tokens_in_metadata([(ACCESS_TOKEN_KEY, "s" * 64)])
    assert ok and account.flwr_aid == NOOP_FLWR_AID
    for metadata in ([], [(ACCESS_TOKEN_KEY, "s" * 63)], [(ACCESS_TOKEN_KEY, "t" * 64)],
                     [(ACCESS_TOKEN_KEY, "s" * 64)] * 2, [("other", "s" * 64)]):  # fmt: skip
        assert plugin.validate_tokens_in_metadata(metadata) == (False, None)
    secret.write_bytes(b"short")
    with pytest.raises(SystemExit, match="too short"):
        control_plugin()()
