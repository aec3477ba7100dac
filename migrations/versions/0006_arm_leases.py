"""arms leased in the store by one orchestrator at a time; why an episode aborted

robots.lease_holder / robots.lease_expires_at: the orchestrator driving the arm and until
when (renewed with its trial leases, released on a clean exit, expiring if it dies).
episodes.abort_cause: an orchestrator.faults.AbortCause value (policy, scene, bridge, media,
...); only the trial's own causes count towards giving it up. abort_reason keeps the text.

In place on both backends (ADD / DROP COLUMN, SQLite 3.35+): never a table rebuild, which on
SQLite would cascade into steps and labels (docs/schema.md).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("robots", "lease_holder", sa.String(length=200)),
    ("robots", "lease_expires_at", sa.DateTime(timezone=True)),
    ("episodes", "abort_cause", sa.String(length=30)),
)


def upgrade() -> None:
    for table, name, type_ in COLUMNS:
        op.add_column(table, sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    for table, name, _ in reversed(COLUMNS):
        op.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {name}"))
