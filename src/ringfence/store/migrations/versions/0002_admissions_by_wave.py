"""admissions by (release, wave, stratum): counting a capped wave's admissions under the
cross-node cap check reads only that wave's rows; events by (release, device, kind): whether one
admitted device announced intent is one index probe, on both backends

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("admissions", schema=None) as batch_op:
        batch_op.create_index("ix_admissions_release_wave_stratum", ["release_id", "wave", "stratum"], unique=False)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_release_device_kind", ["release_id", "device_id", "kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_release_device_kind")
    with op.batch_alter_table("admissions", schema=None) as batch_op:
        batch_op.drop_index("ix_admissions_release_wave_stratum")
