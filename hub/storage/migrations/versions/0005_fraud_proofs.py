"""audit: fraud proofs (a node's signed claim the audit found false or could not check)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 16:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fraud_proofs",
        sa.Column("proof_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("claimed_loglik", sa.Float(), nullable=False),
        sa.Column("audited_loglik", sa.Float(), nullable=True),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("proof_id"),
    )
    op.create_index("ix_fraud_proofs_node", "fraud_proofs", ["node_id"])


def downgrade() -> None:
    op.drop_index("ix_fraud_proofs_node", table_name="fraud_proofs")
    op.drop_table("fraud_proofs")
