"""`slm-hub init`, `db upgrade` and `ledger ...` as processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from harness import cli
from hub.ledger.keys import load_signing_key
from hub.ledger.ledger import Ledger
from hub.storage.engine import make_engine, schema_state, sqlite_url
from hub.storage.schema import LedgerEntry
from tests.hub.conftest import fresh_postgres
from tests.hub.ledger_load import NODES, record_for
from tests.node.test_cli import _one_line_error

pytestmark = pytest.mark.slow  # the CLI as processes


def _initialised(home: Path, db_url: str):  # type: ignore[no-untyped-def]
    """An initialised hub home on this backend, with 30 recorded inferences and a round."""
    assert cli("slm-hub", "init", "--home", str(home)).returncode == 0
    upgraded = cli("slm-hub", "db", "upgrade", "--home", str(home), "--db", db_url)
    assert upgraded.returncode == 0, upgraded.stderr
    engine = make_engine(db_url)
    assert f"-> {schema_state(engine)[1]}" in upgraded.stdout  # the newest migration
    key = load_signing_key(home / "ledger_key")
    ledger = Ledger(engine, key, key.public_key())
    ledger.ensure_accounts(NODES)
    ledger.record_inferences([record_for(n) for n in range(30)])
    ledger.record_round("med-1", "medicine", 1, [(NODES[0], 10), (NODES[1], 10)])
    return home, db_url, ledger


@pytest.fixture
def hub(tmp_path: Path, db_url: str):  # type: ignore[no-untyped-def]
    home, url, ledger = _initialised(tmp_path / "hub", db_url)
    yield home, url, ledger
    ledger.engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def unchanged_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One such home per backend for the tests that must change nothing (each checks so)."""
    root = tmp_path_factory.mktemp("unchanged")
    with contextlib.ExitStack() as stack:
        url = (sqlite_url(root / "hub.db") if request.param == "sqlite"
               else stack.enter_context(fresh_postgres()))  # fmt: skip
        home, url, ledger = _initialised(root / "hub", url)
        yield home, url, ledger
        ledger.engine.dispose()


def hub_cli(hub, *args: str):
    home, db_url, _ = hub
    return cli("slm-hub", *args, "--home", str(home), "--db", db_url)


def entry_count(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(LedgerEntry))


def test_init_is_idempotent_and_upgrade_reports_up_to_date(hub) -> None:
    home, _, _ = hub
    key, ca = (home / "ledger_key").read_bytes(), (home / "ca.pem").read_bytes()
    again = cli("slm-hub", "init", "--home", str(home))
    assert again.returncode == 0 and "already" in again.stdout
    assert (home / "ledger_key").read_bytes() == key and (home / "ca.pem").read_bytes() == ca
    assert "up to date" in hub_cli(hub, "db", "upgrade").stdout


def test_balance_history_top_show_and_verify(hub) -> None:
    _, _, ledger = hub
    balances = json.loads(hub_cli(hub, "ledger", "balance", "--json").stdout)
    assert sum(float(v) for v in balances.values()) == pytest.approx(0)
    assert set(balances) == {"treasury", *(f"node:{n}" for n in NODES)}
    one = json.loads(hub_cli(hub, "ledger", "balance", NODES[0][:8], "--json").stdout)
    assert one == {f"node:{NODES[0]}": balances[f"node:{NODES[0]}"]}
    table = hub_cli(hub, "ledger", "balance").stdout
    assert "sum of all balances: 0.000000" in table

    history = json.loads(
        hub_cli(hub, "ledger", "history", "--node", NODES[0], "--kind", "training_reward",
                "--json").stdout
    )  # fmt: skip
    assert [e["ref"] for e in history] == ["med-1"]
    newest = json.loads(hub_cli(hub, "ledger", "history", "--limit", "3", "--json").stdout)
    assert [e["seq"] for e in newest] == list(
        range(entry_count(ledger) - 2, entry_count(ledger) + 1)
    )
    assert json.loads(hub_cli(hub, "ledger", "history", "--since", "1h", "--json").stdout)
    assert (
        json.loads(hub_cli(hub, "ledger", "history", "--until", "2020-01-01", "--json").stdout)
        == []
    )

    top = json.loads(hub_cli(hub, "ledger", "top", "--period", "24h", "--json").stdout)
    assert top[0]["account"].startswith("node:") and len(top) == len(NODES)
    shown = json.loads(hub_cli(hub, "ledger", "show", "req-0000007", "--json").stdout)
    assert shown["inference"]["outcome"] == "success"
    assert len(shown["inference"]["segments"]) == 2  # 7 is a fail-over in the load pattern
    assert sum(e["amount"] for e in shown["entries"]) > 0

    verified = hub_cli(hub, "ledger", "verify")
    assert verified.returncode == 0 and f"{entry_count(ledger)} entries" in verified.stdout


def test_exports_csv_to_a_file_and_json_to_stdout(hub, tmp_path: Path) -> None:
    _, _, ledger = hub
    out = tmp_path / "ledger.csv"
    assert hub_cli(hub, "ledger", "export", "--format", "csv", "--out", str(out)).returncode == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == entry_count(ledger) and rows[0]["seq"] == "1"
    lines = hub_cli(hub, "ledger", "export", "--format", "json").stdout.splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(1, entry_count(ledger) + 1))


def test_verify_fails_and_names_the_edited_entry(hub) -> None:
    _, _, ledger = hub
    with ledger.engine.connect() as conn:
        conn.execute(text("UPDATE ledger_entries SET amount = 1 WHERE seq = 4"))
        conn.commit()
    result = hub_cli(hub, "ledger", "verify")
    _one_line_error(result, "FAILED at entry 4")


def test_penalize_takes_credits_back(hub) -> None:
    before = json.loads(hub_cli(hub, "ledger", "balance", NODES[2], "--json").stdout)
    done = hub_cli(hub, "ledger", "penalize", NODES[2], "0.5", "--reason", "failed audit")
    assert done.returncode == 0, done.stderr
    after = json.loads(hub_cli(hub, "ledger", "balance", NODES[2], "--json").stdout)
    key = f"node:{NODES[2]}"
    assert float(after[key]) == pytest.approx(float(before[key]) - 0.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ledger", "penalize", NODES[0], "-3", "--reason", "x"], "positive"),
        (["ledger", "penalize", NODES[0], "lots", "--reason", "x"], "not a number"),
        (["ledger", "penalize", "ffffffffff", "1", "--reason", "x"], "unknown node"),
        (["ledger", "balance", "ffffffffff"], "unknown node"),
        (["ledger", "history", "--since", "last tuesday"], "malformed date"),
        (["ledger", "top", "--period", "2026-13-45"], "malformed date"),
        (["ledger", "show", "no-such-request"], "no inference"),
        (["ledger", "history", "--since", "1000000d"], "malformed date"),
        (["ledger", "top", "--limit", "0"], "--limit"),
        (["ledger", "export", "--format", "csv", "--out", "/tmp"], "is a folder"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    unchanged_hub, args: list[str], message: str
) -> None:  # fmt: skip
    _, _, ledger = unchanged_hub
    before = entry_count(ledger)
    _one_line_error(hub_cli(unchanged_hub, *args), message)
    assert entry_count(ledger) == before


def test_a_newer_schema_is_refused(hub) -> None:
    _, _, ledger = hub
    with ledger.engine.connect() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        conn.commit()
    _one_line_error(hub_cli(hub, "ledger", "balance"), "newer than this slm-hub")
    _one_line_error(hub_cli(hub, "db", "upgrade"), "newer than this slm-hub")


def test_databases_that_cannot_be_used_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "hub"
    cli("slm-hub", "init", "--home", str(home))
    unreachable = cli("slm-hub", "ledger", "balance", "--home", str(home),
                          "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none")  # fmt: skip
    _one_line_error(unreachable, "cannot connect")
    nonsense = cli("slm-hub", "ledger", "balance", "--home", str(home), "--db", "not a url")
    _one_line_error(nonsense, "invalid database URL")
    token = cli("slm-hub", "token", "create", "--home", str(home), "--domain", "law")
    assert token.returncode == 0 and token.stdout.startswith("slmj_")
    _one_line_error(
        cli("slm-hub", "token", "create", "--home", str(home), "--domain", "law", "--ttl", "x"),
        "malformed duration",
    )
    fresh = cli("slm-hub", "ledger", "verify", "--home", str(home),
                    "--db", f"sqlite:///{tmp_path / 'never-upgraded.db'}")  # fmt: skip
    _one_line_error(fresh, "slm-hub db upgrade")
