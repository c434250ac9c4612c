"""validations: a content type may carry its content-type definition, and the results of the
validators run on each release's artifact are kept for the gate of rollout start

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("content_types", schema=None) as batch_op:
        batch_op.add_column(sa.Column("definition", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("definition_dir", sa.String(length=1000), nullable=True))
    op.create_table(
        "validations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("release_id", sa.String(length=40), nullable=False),
        sa.Column("validator", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"], name=op.f("fk_validations_release_id_releases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validations")),
    )
    with op.batch_alter_table("validations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_validations_release_id"), ["release_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("validations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_validations_release_id"))
    op.drop_table("validations")
    with op.batch_alter_table("content_types", schema=None) as batch_op:
        batch_op.drop_column("definition_dir")
        batch_op.drop_column("definition")
