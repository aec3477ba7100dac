"""index for the paired report's blocks

ix_trials_blocks (campaign_id, task_id, trial_index, campaign_policy_id): the report groups a
campaign's counted episodes into blocks (same task and trial index across policies); with this
covering index the grouping streams in index order instead of sorting 100k rows
(benchmarks/store.py; BENCHMARKS.md).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_trials_blocks", "trials",
                    ["campaign_id", "task_id", "trial_index", "campaign_policy_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_trials_blocks", table_name="trials")
