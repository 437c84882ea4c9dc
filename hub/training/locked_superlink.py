"""Flower's SuperLink, locked to the hub: `python -m hub.training.locked_superlink` is what
`slm-hub serve` runs in place of `flower-superlink`.

Why: Flower 1.41 serves its Fleet, Control and Runtime APIs over HTTP on one port, and its
Control API authenticates no one unless an enterprise plugin is installed. Anyone who could
reach the port could start a run with a bundle of their own (code run by the ServerApp, with
the hub's ledger key in reach), register a SuperNode key the hub never admitted, or take a
pending ServerApp task from the Runtime API. So this launcher runs Flower's own app with two
changes, using only what Flower's CLI module exposes for it:

- the Control API accepts a call only with the hub's secret as its bearer token (a plugin in
  place of Flower's no-op one; the secret file is the hub's, 0600);
- everything listens on loopback, for the hub and the ServerApp's SuperExec, and the public
  port (the one nodes dial) serves the Fleet API alone (and /health): Control, Runtime and the
  API docs are 404 there;
- the SuperLink runs with `--isolation process` and a SuperExec secret, and starts its
  ServerApp launcher itself (`hub.training.serverapps`, over TLS, with that secret): a local
  user cannot take a run's ServerApp task from the loopback Runtime API, and no bundle but the
  project's runs.

The private names it relies on are pinned with `flwr==1.41.0` and imported by a test.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import importlib
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

TOKEN_ENV = "SLM_HUB_CONTROL_TOKEN_FILE"  # where the Control API's secret is
PUBLIC_FLAG = "--public-fleet-address"  # HOST:PORT where nodes reach the Fleet API
PUBLIC_PREFIXES = ("/v1/fleet/",)
PUBLIC_PATHS = frozenset({"/health"})
MIN_TOKEN_BYTES = 32

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]


def superlink_cli() -> Any:
    """Flower's `flower_superlink` module (its package re-exports a function of that name)."""
    return importlib.import_module("flwr.superlink.cli.flower_superlink")


def control_plugin() -> type:
    """The Control API's authentication: the hub's secret as a bearer token, or 401."""
    from flwr.common.constant import ACCESS_TOKEN_KEY, NOOP_ACCOUNT_NAME, NOOP_FLWR_AID
    from flwr.supercore.auth.typing import AccountInfo
    from flwr.supercore.error import ApiErrorCode, FlowerError
    from flwr.superlink.auth_plugin import ControlAuthnPlugin

    class HubSecretPlugin(ControlAuthnPlugin):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            with open(os.environ[TOKEN_ENV], "rb") as f:
                self.secret = f.read().strip()
            if len(self.secret) < MIN_TOKEN_BYTES:
                raise SystemExit(f"the Control API secret in ${TOKEN_ENV} is too short")

        def get_login_details(self) -> None:
            return None

        def validate_tokens_in_metadata(self, metadata: Any) -> tuple[bool, Any]:
            tokens = [v for k, v in metadata if k == ACCESS_TOKEN_KEY]
            if len(tokens) == 1:
                given = tokens[0] if isinstance(tokens[0], bytes) else str(tokens[0]).encode()
                if hmac.compare_digest(given, self.secret):
                    # Flower's no-op federation admits only the no-op account as a member
                    return True, AccountInfo(flwr_aid=NOOP_FLWR_AID, account_name=NOOP_ACCOUNT_NAME)
            return False, None

        def get_auth_tokens(self, device_code: str) -> Any:
            raise FlowerError(ApiErrorCode.NO_ACCOUNT_AUTH, "login is disabled on this hub")

        def refresh_tokens(self, metadata: Any) -> Any:
            raise FlowerError(ApiErrorCode.NO_ACCOUNT_AUTH, "login is disabled on this hub")

    return HubSecretPlugin


def public_path(path: str) -> bool:
    """What the public port serves: the Fleet API and the health check, nothing else."""
    return ".." not in path and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))


class FleetOnly:
    """An ASGI wrapper that answers 404 to every path but the public ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and public_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # lifespan belongs to the loopback server; no websockets
            return
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"Not Found"})


def launcher_command(flags: list[str]) -> list[str]:
    """The ServerApp launcher for a SuperLink started with `flags`: on its loopback Runtime
    API, over its TLS (or not), with its SuperExec secret, exiting with it."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag in ("--port", "--ssl-ca-certfile", "--superexec-auth-secret-file"):
        parser.add_argument(flag)
    parser.add_argument("--insecure", action="store_true")
    given, _ = parser.parse_known_args(flags)
    if not given.superexec_auth_secret_file:
        raise SystemExit("--superexec-auth-secret-file is required: the Runtime API needs it")
    tls = ["--insecure"] if given.insecure else ["--root-certificates", given.ssl_ca_certfile]
    return [
        sys.executable, "-m", "hub.training.serverapps",
        "--runtime-api-address", f"127.0.0.1:{given.port}", *tls,
        "--parent-pid", str(os.getpid()),
        "--superexec-auth-secret-file", given.superexec_auth_secret_file,
    ]  # fmt: skip


def main() -> int:
    argv = sys.argv[1:]
    if PUBLIC_FLAG not in argv:
        raise SystemExit(f"usage: {PUBLIC_FLAG} HOST:PORT <flower-superlink flags on loopback>")
    i = argv.index(PUBLIC_FLAG)
    public_host, public_port = argv[i + 1].rsplit(":", 1)
    sys.argv = [sys.argv[0], *argv[:i], *argv[i + 2 :]]

    import uvicorn
    from flwr.supercore.http_logging import get_uvicorn_log_config
    from flwr.supercore.logger import console_handler
    from flwr.superlink.main import create_app

    cli = superlink_cli()
    cli.load_control_authn_plugin = control_plugin()  # read from the module when parsing
    launcher = launcher_command(sys.argv[1:])
    config = cli._parse_superlink_lifespan_config()
    if config.host not in ("127.0.0.1", "::1"):
        raise SystemExit("--host must be loopback: only the Fleet API listens publicly")
    app = create_app(config, cli.SuperLinkLifespan)
    common: dict[str, Any] = {
        "access_log": False, "log_config": get_uvicorn_log_config(console_handler.level),
        "ssl_keyfile": config.ssl_keyfile, "ssl_certfile": config.ssl_certfile,
    }  # fmt: skip
    local = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, **common))
    public = uvicorn.Server(uvicorn.Config(
        FleetOnly(app), host=public_host.strip("[]"), port=int(public_port), lifespan="off",
        **common,
    ))  # fmt: skip

    async def serve() -> int:
        """Loopback first (its lifespan starts Flower's state), then the ServerApp launcher
        and the public port; when one stops, all do."""
        local_task = asyncio.create_task(local.serve())
        while not local.started and not local_task.done():
            await asyncio.sleep(0.05)
        if local_task.done():
            return 1
        serverapps = await asyncio.create_subprocess_exec(*launcher)
        launcher_task = asyncio.create_task(serverapps.wait())
        public_task = asyncio.create_task(public.serve())
        await asyncio.wait({local_task, public_task, launcher_task},
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        # the hub restarts a SuperLink that exits; one without its launcher would hang runs
        failed = launcher_task.done() or (public_task.done() and not public.started)
        local.should_exit = public.should_exit = True
        await asyncio.gather(local_task, public_task, return_exceptions=True)
        if serverapps.returncode is None:
            serverapps.terminate()
            await launcher_task
        return 1 if failed else 0

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
