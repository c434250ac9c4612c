"""unvalidated content types: a content type registered without a definition carries the reason
it was registered that way; the rollouts of its releases start without validation

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

EARLIER = "registered before validation was required"


def upgrade() -> None:
    with op.batch_alter_table("content_types", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unvalidated_reason", sa.Text(), nullable=True))
    content_types = sa.table("content_types", sa.column("definition", sa.Text()),
                             sa.column("unvalidated_reason", sa.Text()))
    op.execute(content_types.update().where(content_types.c.definition.is_(None))
               .values(unvalidated_reason=EARLIER))


def downgrade() -> None:
    with op.batch_alter_table("content_types", schema=None) as batch_op:
        batch_op.drop_column("unvalidated_reason")
