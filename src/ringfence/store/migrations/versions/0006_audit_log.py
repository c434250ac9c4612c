"""audit log: an append-only, hash-chained record of every change and admin action

The database itself keeps the log append-only: triggers refuse UPDATE and DELETE (PostgreSQL
also TRUNCATE), and an INSERT that does not extend the chain (its seq is not head + 1, or its
prev_hash is not the head's hash). The hashes (``ringfence.store.audit``) reveal what somebody
who can drop the triggers changes anyway.

On SQLite a batch migration that rebuilds ``audit_log`` drops its triggers: such a migration
must create them again (``_sqlite_triggers``).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PG_UP = [
    """
    CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log is append-only: % is refused', TG_OP;
    END $$
    """,
    """
    CREATE FUNCTION audit_log_extend_chain() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        head_seq bigint := 0;
        head_hash varchar(64) := repeat('0', 64);
    BEGIN
        SELECT seq, hash INTO head_seq, head_hash FROM audit_log ORDER BY seq DESC LIMIT 1;
        IF NOT FOUND THEN
            head_seq := 0;
            head_hash := repeat('0', 64);
        END IF;
        IF NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
            RAISE EXCEPTION 'audit_log is append-only: entry % does not extend the chain at entry %',
                NEW.seq, head_seq;
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()
    """,
    """
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()
    """,
    """
    CREATE TRIGGER audit_log_extends_chain BEFORE INSERT ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_extend_chain()
    """,
]

PG_DOWN = [
    "DROP TRIGGER IF EXISTS audit_log_extends_chain ON audit_log",
    "DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log",
    "DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log",
    "DROP FUNCTION IF EXISTS audit_log_extend_chain()",
    "DROP FUNCTION IF EXISTS audit_log_refuse_change()",
]


def _sqlite_triggers() -> list[str]:
    return [
        """
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE is refused'); END
        """,
        """
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE is refused'); END
        """,
        """
        CREATE TRIGGER audit_log_extends_chain BEFORE INSERT ON audit_log
        WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_log)
          OR NEW.prev_hash IS NOT COALESCE((SELECT hash FROM audit_log WHERE seq = NEW.seq - 1), hex(zeroblob(32)))
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: an entry must extend the chain'); END
        """,
    ]


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_target"), ["target"], unique=False)
    dialect = op.get_bind().dialect.name
    statements = PG_UP if dialect == "postgresql" else _sqlite_triggers() if dialect == "sqlite" else []
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in PG_DOWN:
            op.execute(statement)
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_target"))
        batch_op.drop_index(batch_op.f("ix_audit_log_actor"))
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))
    op.drop_table("audit_log")
