"""CDS client JWT ids already used (replay refused across workers)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cds_jwt_ids",
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("jti", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti", name=op.f("pk_cds_jwt_ids")),
    )
    op.create_index(op.f("ix_cds_jwt_ids_expires_at"), "cds_jwt_ids", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_cds_jwt_ids_expires_at"), table_name="cds_jwt_ids")
    op.drop_table("cds_jwt_ids")
