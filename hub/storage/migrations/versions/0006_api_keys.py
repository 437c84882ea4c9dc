"""the public face: API keys, and each account's balance kept beside the chain

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 18:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("rate_per_min", sa.Integer(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("revoked_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("balance", sa.BigInteger(), nullable=False, server_default="0"))
    # what the chain already says, once; from now on every append keeps it
    op.execute(
        "UPDATE accounts SET balance = "
        "COALESCE((SELECT SUM(amount) FROM ledger_entries WHERE credit = accounts.id), 0) - "
        "COALESCE((SELECT SUM(amount) FROM ledger_entries WHERE debit = accounts.id), 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("balance")
    op.drop_table("api_keys")
