"""action chunks and declared spaces on steps

steps gains the full applied action vector (`action`, JSON list, in the arm's declared space),
the space's label (`action_space`, e.g. "joint_position[8]"), and where the action came from:
`chunk_id`, `chunk_index`, `chunk_age_ms`. RT-2's `dx .. gripper` columns become nullable:
they hold the applied action for `ee_delta[7]` episodes and are NULL for any other space.

Existing rows (all RT-2, one query per step) are filled in place: `action` = [dx .. gripper],
`action_space` = ee_delta[7], `chunk_id` = idx (every step was its own chunk of length 1),
`chunk_index` = 0, `chunk_age_ms` = obs_age_ms (the chunk was computed from that very
observation). No table is rebuilt (docs/schema.md): ADD COLUMN / DROP COLUMN in place, and on
SQLite NOT NULL is dropped (and restored by the downgrade) by editing the table's declaration
in place, as 0007 does for a CHECK.

Downgrade: the new columns are dropped; a step of another space (dx .. gripper NULL) keeps
its row with dx .. gripper = 0 (its vector was only in the dropped `action` column).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EE_COLUMNS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
NEW_COLUMNS = ("action", "action_space", "chunk_id", "chunk_index", "chunk_age_ms")


def _sqlite_set_not_null(table: str, columns: Sequence[str], not_null: bool) -> None:
    """Drop (not_null=False) or restore NOT NULL on `columns` by editing the declaration in
    place (SQLite lang_altertable.html, "making other kinds of table schema changes"; the
    same procedure as 0007's _swap_check), then check every row of the table against it."""
    bind = op.get_bind()
    ddl = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
    ).scalar_one()
    new = ddl
    for c in columns:
        strict, loose = f"\t{c} FLOAT NOT NULL,", f"\t{c} FLOAT,"
        old_decl, new_decl = (loose, strict) if not_null else (strict, loose)
        if new.count(old_decl) != 1:
            raise RuntimeError(f"table {table}: column declaration {old_decl.strip()!r} not found "
                               "once; refusing to edit the table's declaration")
        new = new.replace(old_decl, new_decl)
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.execute(
            sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = :t"),
            {"sql": new, "t": table},
        )
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = bind.exec_driver_sql(f"PRAGMA integrity_check({table})").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"table {table}: integrity check after the NOT NULL change: {problems}")


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    # plain ADD COLUMN on both backends (batch mode would copy the table on SQLite)
    op.add_column("steps", sa.Column("action", sa.JSON(), nullable=False,
                                     server_default=sa.text("'[]'")))
    op.add_column("steps", sa.Column("action_space", sa.String(length=40), nullable=False,
                                     server_default=sa.text("'ee_delta[7]'")))
    op.add_column("steps", sa.Column("chunk_id", sa.Integer(), nullable=False,
                                     server_default=sa.text("0")))
    op.add_column("steps", sa.Column("chunk_index", sa.Integer(), nullable=False,
                                     server_default=sa.text("0")))
    op.add_column("steps", sa.Column("chunk_age_ms", sa.Float(), nullable=False,
                                     server_default=sa.text("0")))
    arr = "json_array" if sqlite else "json_build_array"
    op.execute(sa.text(
        f"UPDATE steps SET action = {arr}({', '.join(EE_COLUMNS)}), chunk_id = idx, "
        "chunk_age_ms = obs_age_ms"
    ))
    if sqlite:
        _sqlite_set_not_null("steps", EE_COLUMNS, not_null=False)
    else:
        for c in EE_COLUMNS:
            op.alter_column("steps", c, existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.execute(sa.text(
        "UPDATE steps SET " + ", ".join(f"{c} = 0" for c in EE_COLUMNS) + " WHERE dx IS NULL"
    ))
    if sqlite:
        _sqlite_set_not_null("steps", EE_COLUMNS, not_null=True)
    else:
        for c in EE_COLUMNS:
            op.alter_column("steps", c, existing_type=sa.Float(), nullable=False)
    for c in reversed(NEW_COLUMNS):
        if sqlite:  # SQLite 3.35+ drops a column in place
            op.execute(sa.text(f"ALTER TABLE steps DROP COLUMN {c}"))
        else:
            op.drop_column("steps", c)
