"""change management: teams own content types; API tokens are scoped to a team or a tenant;
releases collect approvals (how many, fixed when the release is created; releases from before
need none); freeze windows block starts

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_teams")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("tenant", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("created_by", sa.String(length=200), nullable=True))
    with op.batch_alter_table("content_types", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team", sa.String(length=128), nullable=True))
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approvals_required", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("release_id", sa.String(length=40), nullable=False),
        sa.Column("approver", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("emergency", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"], name=op.f("fk_approvals_release_id_releases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approvals_release_id"), ["release_id"], unique=False)
    op.create_table(
        "freeze_windows",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("team", sa.String(length=128), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_freeze_windows")),
    )


def downgrade() -> None:
    op.drop_table("freeze_windows")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approvals_release_id"))
    op.drop_table("approvals")
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_column("approvals_required")
    with op.batch_alter_table("content_types", schema=None) as batch_op:
        batch_op.drop_column("team")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("created_by")
        batch_op.drop_column("tenant")
        batch_op.drop_column("team")
    op.drop_table("teams")
