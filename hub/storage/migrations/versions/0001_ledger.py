"""ledger: accounts, entries, head, inferences, training rounds

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 07:22:39.046933
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "inferences",
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("prompt_sha256", sa.String(length=64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("candidates", sa.Text(), nullable=False),
        sa.Column("chosen_node", sa.String(length=64), nullable=False),
        sa.Column("segments", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("completion_signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_inferences_created", "inferences", ["created_at"], unique=False)
    op.create_table(
        "ledger_entries",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("entry_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("debit", sa.String(length=80), nullable=False),
        sa.Column("credit", sa.String(length=80), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_entry_amount_positive"),
        sa.CheckConstraint("debit <> credit", name="ck_entry_two_accounts"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("entry_id"),
    )
    op.create_index("ix_entries_created", "ledger_entries", ["created_at"], unique=False)
    op.create_index("ix_entries_credit", "ledger_entries", ["credit"], unique=False)
    op.create_index("ix_entries_debit", "ledger_entries", ["debit"], unique=False)
    op.create_index("ix_entries_ref", "ledger_entries", ["ref"], unique=False)
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "training_rounds",
        sa.Column("round_id", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("participants", sa.Text(), nullable=False),
        sa.Column("rejected", sa.Text(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("round_id"),
    )


def downgrade() -> None:

    op.drop_table("training_rounds")
    op.drop_table("ledger_head")
    op.drop_index("ix_entries_ref", table_name="ledger_entries")
    op.drop_index("ix_entries_debit", table_name="ledger_entries")
    op.drop_index("ix_entries_credit", table_name="ledger_entries")
    op.drop_index("ix_entries_created", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index("ix_inferences_created", table_name="inferences")
    op.drop_table("inferences")
    op.drop_table("accounts")
