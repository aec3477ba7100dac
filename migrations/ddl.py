"""DDL helpers the revisions share (migrations/versions/*.py import them)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def swap_check(table: str, old: str, new: str, name: str = "status") -> None:
    """Replace a table's CHECK constraint `ck_<table>_<name>`, keeping every row.

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
            batch_op.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
            batch_op.create_check_constraint(op.f(f"ck_{table}_{name}"), new)
        return
    ddl = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
    ).scalar_one()
    if f"CHECK ({old})" not in ddl:
        raise RuntimeError(f"table {table}: {name} CHECK is not {old!r}; refusing to edit it")
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


def drop_column(table: str, column: str) -> None:
    """SQLite 3.35+ drops a column in place (ALTER TABLE DROP COLUMN); batch mode's copy would
    cascade-delete the rows that reference the table (see swap_check)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    else:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column(column)
