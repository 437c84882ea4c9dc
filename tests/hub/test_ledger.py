"""The ledger against SQLite and PostgreSQL: rewards, idempotency, concurrency, crash, tamper."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from hub.ledger.entries import TREASURY, LedgerError, node_account
from hub.ledger.ledger import Ledger
from hub.ledger.rewards import MICRO, InferenceRecord, Rewards, parse_credits
from hub.ledger.writer import LedgerWriter
from hub.storage.engine import MIGRATIONS, DatabaseError, _revisions, check_current, make_engine
from hub.storage.schema import Inference, LedgerEntry
from slm.cache import CACHE_ENV
from tests.conftest import ROOT
from tests.hub.ledger_load import NODES, record_for

A, B = NODES[0], NODES[1]
R = Rewards()


def success(request_id: str, *segments: tuple[str, int]) -> InferenceRecord:
    return InferenceRecord(request_id, "0" * 64, "success", segments, domain="medicine")


def test_a_successful_inference_pays_base_plus_tokens_and_balances_sum_to_zero(ledger) -> None:
    [result] = ledger.record_inferences([success("r1", (A, 20))])
    assert result.recorded
    balances = ledger.balances()
    assert balances[node_account(A)] == R.inference_base + 20 * R.inference_per_token
    assert balances[TREASURY] == -balances[node_account(A)]
    assert sum(balances.values()) == 0
    assert ledger.verify().ok


def test_a_failover_splits_the_reward_by_tokens_delivered(ledger) -> None:
    ledger.record_inferences([success("r2", (A, 10), (B, 30))])
    balances = ledger.balances()
    total = R.inference_base + 40 * R.inference_per_token
    assert balances[node_account(A)] == total * 10 // 40
    assert balances[node_account(A)] + balances[node_account(B)] == total


def test_failures_are_recorded_and_earn_nothing(ledger) -> None:
    for outcome in ("failed", "unverified", "timeout"):
        ledger.record_inferences([InferenceRecord(f"x-{outcome}", "0" * 64, outcome, [(A, 5)])])
    assert ledger.balances()[node_account(A)] == 0
    record, entries = ledger.show("x-timeout")
    assert record["outcome"] == "timeout" and entries == []


def test_the_same_request_id_is_credited_once_however_often_retried(ledger) -> None:
    first = ledger.record_inferences([success("dup", (A, 5)), success("dup", (A, 5))])
    again = ledger.record_inferences([success("dup", (A, 5))])
    assert [r.recorded for r in first + again] == [True, False, False]
    assert ledger.balances()[node_account(A)] == R.inference_base + 5 * R.inference_per_token


def test_an_unknown_node_is_refused_and_nothing_is_written(ledger) -> None:
    with pytest.raises(LedgerError, match="unknown node"):
        ledger.record_inferences([success("ok-1", (A, 5)), success("bad", ("f" * 16, 5))])
    with ledger.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Inference)) == 0
        assert conn.scalar(select(func.count()).select_from(LedgerEntry)) == 0


def test_training_rounds_credit_participants_equally_or_by_examples(ledger) -> None:
    assert ledger.record_round("med-1", "medicine", 1, [(A, 100), (B, 300)], by_examples=True)
    assert not ledger.record_round("med-1", "medicine", 1, [(A, 100), (B, 300)])
    balances = ledger.balances()
    assert balances[node_account(A)] == R.training_round // 4
    assert balances[node_account(B)] == R.training_round * 3 // 4
    ledger.record_round("med-2", "medicine", 2, [(A, 1), (B, 1000)])
    assert ledger.balances()[node_account(A)] == R.training_round // 4 + R.training_round // 2


def test_penalties_move_credits_back_and_are_idempotent_by_ref(ledger) -> None:
    ledger.record_inferences([success("r", (A, 100))])
    before = ledger.balances()[node_account(A)]
    first = ledger.penalize(A[:8], 2 * MICRO, "claimed loglik off by 40 nats", ref="audit-7")
    again = ledger.penalize(A, 2 * MICRO, "claimed loglik off by 40 nats", ref="audit-7")
    assert first.seq == again.seq and first.kind == "penalty"
    assert ledger.balances()[node_account(A)] == before - 2 * MICRO
    assert sum(ledger.balances().values()) == 0
    with pytest.raises(LedgerError, match="unknown node"):
        ledger.penalize("ffffffff", MICRO, "x", ref="r2")
    assert ledger.verify().ok


@pytest.mark.parametrize("text", ["-1", "0", "abc", "1e400", "0.0000001", "nan"])
def test_amounts_must_be_positive_credits(text: str) -> None:
    with pytest.raises(LedgerError):
        parse_credits(text)


def test_the_group_commit_writer_resolves_each_caller_after_its_batch_commits(ledger) -> None:
    writer = LedgerWriter(ledger)
    futures = [writer.submit(record_for(n)) for n in range(300)]
    bad = writer.submit(success("bad", ("f" * 16, 5)))
    results = [f.result(timeout=60) for f in futures]
    with pytest.raises(LedgerError, match="unknown node"):
        bad.result(timeout=60)
    writer.close()
    assert all(r.recorded for r in results)
    with ledger.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Inference)) == 300
    assert ledger.verify().ok


def _start_writer(db_url: str, key_path: Path, first: int, count: int, batch: int = 50):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hub.ledger_load", db_url, str(key_path), str(first),
         str(count), str(batch)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _expected_balances(numbers: set[int]) -> dict[str, int]:
    from hub.ledger.rewards import inference_transfers

    out: dict[str, int] = {}
    for n in numbers:
        for t in inference_transfers(record_for(n), R):
            out[t.credit] = out.get(t.credit, 0) + t.amount
    return out


def _assert_exactly_once(ledger: Ledger, numbers: set[int]) -> None:
    with ledger.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Inference)) == len(numbers)
        duplicated = conn.execute(
            select(LedgerEntry.entry_id).group_by(LedgerEntry.entry_id).having(func.count() > 1)
        ).all()
    assert duplicated == []
    balances = ledger.balances()
    assert sum(balances.values()) == 0
    for account, amount in _expected_balances(numbers).items():
        assert balances[account] == amount, account
    verification = ledger.verify()
    assert verification.ok, verification


@pytest.mark.slow
def test_eight_writer_processes_with_duplicate_ids_credit_each_id_once(ledger, db_url, key_path):
    # 8 processes x 1,250 records = 10,000 attempts over 6,000 distinct request ids: writer k
    # covers ids 500k .. 500k+1249, overlapping its neighbour by 750.
    writers = [_start_writer(db_url, key_path, 500 * k, 1250) for k in range(8)]
    for w in writers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    _assert_exactly_once(ledger, set(range(500 * 7 + 1250)))


@pytest.mark.slow
def test_a_writer_killed_mid_load_leaves_a_valid_ledger_and_the_load_resumes(
    ledger, db_url, key_path
):
    writer = _start_writer(db_url, key_path, 0, 4000, batch=20)
    assert writer.stdout is not None
    committed = 0
    while committed < 600:  # let some batches commit, then kill in the middle of the load
        committed = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    verification = ledger.verify()
    assert verification.ok, verification
    with ledger.engine.connect() as conn:
        recorded = conn.scalar(select(func.count()).select_from(Inference))
        orphans = conn.scalar(
            select(func.count()).select_from(LedgerEntry)
            .where(LedgerEntry.ref.not_in(select(Inference.request_id)))
        )  # fmt: skip
    assert committed + 1 <= recorded < 4000 and recorded % 20 == 0  # whole batches only
    assert orphans == 0
    resumed = _start_writer(db_url, key_path, 0, 4000, batch=20)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    _assert_exactly_once(ledger, set(range(4000)))


def _filled(ledger: Ledger) -> Ledger:
    ledger.record_inferences([record_for(n) for n in range(40)])
    assert ledger.verify().ok
    return ledger


def _tamper(ledger: Ledger, sql: str) -> None:
    with ledger.engine.connect() as conn:
        for statement in sql.split(";"):
            conn.execute(text(statement))
        conn.commit()


@pytest.mark.parametrize(
    ("sql", "bad_seq", "problem"),
    [
        ("UPDATE ledger_entries SET amount = amount + 1000000 WHERE seq = 7", 7, "hash"),
        ("DELETE FROM ledger_entries WHERE seq = 12", 13, "missing"),
        (
            "UPDATE ledger_entries SET seq = -1 WHERE seq = 5; "
            "UPDATE ledger_entries SET seq = 5 WHERE seq = 6; "
            "UPDATE ledger_entries SET seq = 6 WHERE seq = -1",
            5, "link",
        ),
        ("UPDATE ledger_entries SET credit = 'node:e8f901bb5c6d7e04' WHERE seq = 3", 3, "hash"),
        ("DELETE FROM ledger_entries WHERE seq = (SELECT MAX(seq) FROM ledger_entries)",
         None, "head"),
    ],
)  # fmt: skip
def test_editing_deleting_or_reordering_rows_fails_verify_naming_the_entry(
    ledger, sql: str, bad_seq: int | None, problem: str
) -> None:
    _tamper(_filled(ledger), sql)
    result = ledger.verify()
    assert not result.ok
    assert problem in result.problem
    if bad_seq is not None:
        assert result.bad_seq == bad_seq and result.bad_entry_id


def test_a_database_of_a_newer_schema_is_refused(ledger) -> None:
    _tamper(ledger, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(DatabaseError, match="newer"):
        check_current(ledger.engine)


def test_the_kept_revisions_are_alembics_and_a_damaged_entry_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic.script import ScriptDirectory

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    script = ScriptDirectory(str(MIGRATIONS))
    truth = (script.get_current_head(), frozenset(r.revision for r in script.walk_revisions()))
    assert _revisions() == truth  # read from alembic, and kept
    (entry,) = (tmp_path / "migrations").glob("*.json")
    assert _revisions() == truth  # read back
    entry.write_text('{"head": "00')  # cut short by a full disk
    assert _revisions() == truth
    monkeypatch.setenv(CACHE_ENV, str(entry))  # a file: no cache can be kept, and none is needed
    assert _revisions() == truth


def test_a_database_that_cannot_connect_is_one_clear_error() -> None:
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseError, match="cannot connect"):
        check_current(engine)


def test_history_filters_and_top_ranks(ledger) -> None:
    ledger.record_inferences([success("h1", (A, 5)), success("h2", (B, 50))])
    ledger.record_round("law-1", "law", 1, [(A, 1)])
    assert [e.kind for e in ledger.history(node_account(A))] == [
        "inference_reward", "training_reward",
    ]  # fmt: skip
    assert len(ledger.history(kind="training_reward")) == 1
    assert ledger.history(since="2999-01-01T00:00:00.000000Z") == []
    top = ledger.top()
    assert top[0][0] == node_account(A)  # 1.05 + 10 (round) beats 1.5
    assert ledger.top(domain="medicine")[0][0] == node_account(B)


def test_exports_list_every_entry(ledger) -> None:
    _filled(ledger)
    csv_text = "".join(ledger.export("csv"))
    json_lines = "".join(ledger.export("json")).splitlines()
    count = len(ledger.history())
    assert len(csv_text.strip().splitlines()) == count + 1 and len(json_lines) == count


def test_reading_does_not_need_the_signing_key(ledger) -> None:
    _filled(ledger)
    reader = Ledger(ledger.engine, None, ledger.public)
    assert reader.verify().ok
    with pytest.raises(LedgerError, match="read-only"):
        reader.record_inferences([success("z", (A, 1))])


def test_a_forged_row_before_the_chain_fails_verify(ledger) -> None:
    _filled(ledger)
    _tamper(
        ledger,
        "INSERT INTO ledger_entries (seq, entry_id, kind, debit, credit, amount, ref, domain, "
        "reason, created_at, prev_hash, hash, signature) VALUES (-1, 'evil', 'penalty', "
        f"'treasury', 'node:{A}', 1000000000000, 'x', '', '', '2026', '', '', '')",
    )
    result = ledger.verify()
    assert not result.ok and result.bad_entry_id == "evil"


def test_a_cancelled_caller_does_not_stop_the_writer(ledger) -> None:
    writer = LedgerWriter(ledger)
    first = [writer.submit(record_for(n)) for n in range(50)]
    first[10].cancel()
    later = writer.submit(record_for(999))
    assert later.result(timeout=60).recorded
    writer.close()
    assert ledger.show(record_for(10).request_id)[0]["outcome"]  # written all the same


def test_round_participants_are_validated(ledger) -> None:
    for participants, message in (
        ([(A, 5), (A, 5)], "twice"),
        ([(A, 5), (B, -1)], "examples"),
        ([(A, 2.5)], "examples"),
    ):
        with pytest.raises(LedgerError, match=message):
            ledger.record_round("bad", "law", 1, participants, by_examples=True)
    ledger.record_round("ok", "law", 1, [(A, 10), (B, 0)], by_examples=True)
    assert ledger.balances()[node_account(B)] == 0


def test_node_prefixes_are_matched_literally(ledger) -> None:
    for pattern in ("%%%%%%", "______"):
        with pytest.raises(LedgerError, match="unknown node"):
            ledger.resolve_node(pattern)
