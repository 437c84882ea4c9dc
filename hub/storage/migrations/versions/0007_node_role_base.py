"""registry: a node's role (domain or generalist) and the base its model adapts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="domain")
        )
        batch.add_column(sa.Column("base", sa.String(length=64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("base")
        batch.drop_column("role")
