"""`slm-hub init` and `slm-hub db upgrade`: the hub's home folder and database schema."""

from __future__ import annotations

import argparse
from pathlib import Path

from hub.cli.common import Parents
from hub.config import HubConfig

ADMIN = "admin"  # the name of the key `slm-hub init` makes


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "init", parents=[parents.home],
        help="create the hub home: keys, TLS certificates, database",
        description="Create what is missing in the hub home: the ledger signing key, a CA and a "
        "server certificate (for localhost, 127.0.0.1 and every --host), hub.toml, the "
        "database at the current schema, and the operator's admin API key (<home>/api_key). "
        "Run again with --host to reissue the server "
        "certificate for more names; the CA, and so the nodes' trust, stays.",
    )  # fmt: skip
    p.add_argument("--host", action="append", default=[], help="name or address (repeatable)")
    p.set_defaults(run=cmd_init)

    p = sub.add_parser("db", help="database schema")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = db_sub.add_parser("upgrade", parents=[parents.home], help="apply pending schema migrations")
    p.set_defaults(run=cmd_db_upgrade)


def cmd_init(args: argparse.Namespace) -> None:
    made, head = ensure_home(args.home, args.db, args.host)
    print("\n".join(made) if made else f"hub home {args.home} already initialised")
    print(f"database    schema {head}")


def ensure_home(home: Path, db: str | None, hosts: list[str]) -> tuple[list[str], str]:
    """Create what is missing in the hub home; (what was made, the database's schema)."""
    from hub.ledger.keys import create_signing_key, load_signing_key, write_public_key
    from hub.storage.engine import make_engine, upgrade
    from hub.tls import TLSFiles, certificate_hosts, create_tls

    cfg = HubConfig.load(home, db)
    home.mkdir(parents=True, exist_ok=True)
    made = []
    if not cfg.signing_key_path.exists():
        create_signing_key(cfg.signing_key_path)
        made.append(f"signing key {cfg.signing_key_path} (Ed25519; signs every ledger entry)")
    elif not cfg.public_key_path.exists():  # an init interrupted between the two files
        write_public_key(cfg.signing_key_path, load_signing_key(cfg.signing_key_path))
    tls = TLSFiles(home)
    if hosts or not tls.server_cert.exists():
        known = certificate_hosts(tls.server_cert) if tls.server_cert.exists() else []
        create_tls(tls, [*known, *hosts])
        made.append(
            f"certificate {tls.server_cert} for {', '.join(certificate_hosts(tls.server_cert))}"
        )
        made.append(f"CA          {tls.ca_cert} (give it to nodes: slm-node join --ca)")
    if not cfg.settings_path.exists():
        cfg.save()
        made.append(f"settings    {cfg.settings_path}")
    engine = make_engine(cfg.db_url)
    head = upgrade(engine)
    if _admin_key(cfg, engine):
        made.append(f"admin key   {cfg.api_key_path} (for slm-hub ask/nodes; fund it with "
                    "slm-hub ledger grant admin N)")  # fmt: skip
    return made, head


def _admin_key(cfg: HubConfig, engine) -> bool:  # type: ignore[no-untyped-def]
    """The operator's own API key, in the home, once: admin, no rate limits, no credits."""
    from hub.access.key_limits import KeyLimits
    from hub.access.keys import KeyStore
    from hub.ledger.keys import load_public_key, load_signing_key
    from hub.ledger.ledger import Ledger
    from slm.atomic import atomic_write_bytes

    store = KeyStore(engine)
    if cfg.api_key_path.exists() or any(k.name == ADMIN for k in store.list()):
        return False
    secret, record = store.create(ADMIN, KeyLimits(rate=0, max_concurrent=0), admin=True)
    ledger = Ledger(engine, load_signing_key(cfg.signing_key_path),
                    load_public_key(cfg.public_key_path))  # fmt: skip
    ledger.ensure_accounts([], [record.key_id])
    atomic_write_bytes(cfg.api_key_path, (secret + "\n").encode(), mode=0o600)
    return True


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    from hub.storage.engine import make_engine, schema_state, upgrade

    engine = make_engine(HubConfig.load(args.home, args.db).db_url)
    before, _ = schema_state(engine)
    head = upgrade(engine)
    where = engine.url.render_as_string(hide_password=True)
    print(
        f"{where}: schema {before or 'none'} -> {head}"
        if before != head
        else f"{where}: schema {head}, up to date"
    )
