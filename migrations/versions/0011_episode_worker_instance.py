"""episodes.worker_instance: which policy worker instance ran the episode

The policy worker's instance id (it changes when Ray restarts the worker), recorded on every
episode next to `policy_checksum`, so that an episode says exactly which served policy and
which process produced its actions (issue 11: remote policies). Nullable: NULL for episodes
recorded before this revision, and for episodes whose worker never answered.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("episodes", sa.Column("worker_instance", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("episodes", "worker_instance")
