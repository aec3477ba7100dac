"""incomplete campaigns, given-up trials, requeue

A trial that failed its whole attempt budget is `given_up` (before: `cancelled`, which now
only means that a person cancelled the campaign); a campaign whose trials are all closed but
some given up or cancelled is `incomplete` (before: `done`). Existing rows are converted:
a cancelled trial of a campaign that is not cancelled can only have been given up.
trials.requeued_at_attempt: the trial's attempts when it was last re-queued (0: never); only
aborts of later attempts count towards giving it up again (a fresh budget, history kept).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_TRIAL = "status IN ('pending','leased','done','cancelled')"
NEW_TRIAL = "status IN ('pending','leased','done','given_up','cancelled')"
OLD_CAMPAIGN = "status IN ('pending','running','paused','done','cancelled')"
NEW_CAMPAIGN = "status IN ('pending','running','paused','done','incomplete','cancelled')"


def _swap_check(table: str, old: str, new: str) -> None:
    """Replace a table's status CHECK constraint, keeping every row.

    PostgreSQL: a plain ALTER (batch mode passes it through). SQLite cannot alter a CHECK,
    and batch mode's copy-and-rename would DROP the old table: with foreign keys on (the store
    turns them on, and a pragma cannot turn them off inside the migration's transaction) that
    cascades and deletes every episode, step and label. A CHECK is not stored in the rows, so
    on SQLite the table's declaration is edited in place (the rows already fit the new CHECK:
    upgrade widens it, downgrade narrows it after converting the rows), following
    the procedure SQLite documents for such changes (lang_altertable.html, "making other kinds
    of table schema changes"): writable_schema, bump schema_version, integrity_check.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f"ck_{table}_status"), type_="check")
            batch_op.create_check_constraint(op.f(f"ck_{table}_status"), new)
        return
    ddl = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
    ).scalar_one()
    if f"CHECK ({old})" not in ddl:
        raise RuntimeError(f"table {table}: status CHECK is not {old!r}; refusing to edit it")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.execute(
            sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = :t"),
            {"sql": ddl.replace(f"CHECK ({old})", f"CHECK ({new})"), "t": table},
        )
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    # this table only (SQLite 3.33+): every row against the new declaration, CHECK included
    problems = bind.exec_driver_sql(f"PRAGMA integrity_check({table})").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"table {table}: integrity check after the CHECK change: {problems}")


def upgrade() -> None:
    # a plain ADD COLUMN on both backends (batch mode would copy the table on SQLite)
    op.add_column("trials", sa.Column("requeued_at_attempt", sa.Integer(), nullable=False,
                                      server_default=sa.text("0")))
    _swap_check("trials", OLD_TRIAL, NEW_TRIAL)
    _swap_check("campaigns", OLD_CAMPAIGN, NEW_CAMPAIGN)
    op.execute(sa.text(
        "UPDATE trials SET status = 'given_up' WHERE status = 'cancelled' AND campaign_id IN "
        "(SELECT id FROM campaigns WHERE status <> 'cancelled')"
    ))
    op.execute(sa.text(
        "UPDATE campaigns SET status = 'incomplete' WHERE status = 'done' AND id IN "
        "(SELECT campaign_id FROM trials WHERE status IN ('given_up','cancelled'))"
    ))


def downgrade() -> None:
    op.execute(sa.text("UPDATE trials SET status = 'cancelled' WHERE status = 'given_up'"))
    op.execute(sa.text("UPDATE campaigns SET status = 'done' WHERE status = 'incomplete'"))
    _swap_check("trials", NEW_TRIAL, OLD_TRIAL)
    _swap_check("campaigns", NEW_CAMPAIGN, OLD_CAMPAIGN)
    _drop_requeue_column()


def _drop_requeue_column() -> None:
    """SQLite 3.35+ drops a column in place (ALTER TABLE DROP COLUMN); batch mode's copy would
    cascade-delete the episodes (see _swap_check)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(sa.text("ALTER TABLE trials DROP COLUMN requeued_at_attempt"))
    else:
        with op.batch_alter_table("trials", schema=None) as batch_op:
            batch_op.drop_column("requeued_at_attempt")
