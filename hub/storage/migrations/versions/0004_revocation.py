"""registry: revocation time and reason; version and preset columns as long as the wire allows

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("revoked_at", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("revoked_reason", sa.Text(), nullable=False, server_default=""))
        batch.alter_column("model_version", type_=sa.String(length=64),
                           existing_type=sa.String(length=32))  # fmt: skip
        batch.alter_column("preset", type_=sa.String(length=64), existing_type=sa.String(length=32))
        batch.create_index("ix_nodes_revoked_at", ["revoked_at"])


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_index("ix_nodes_revoked_at")
        batch.alter_column("preset", type_=sa.String(length=32), existing_type=sa.String(length=64))
        batch.alter_column("model_version", type_=sa.String(length=32),
                           existing_type=sa.String(length=64))  # fmt: skip
        batch.drop_column("revoked_reason")
        batch.drop_column("revoked_at")
