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

from migrations.ddl import drop_column, swap_check

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_TRIAL = "status IN ('pending','leased','done','cancelled')"
NEW_TRIAL = "status IN ('pending','leased','done','given_up','cancelled')"
OLD_CAMPAIGN = "status IN ('pending','running','paused','done','cancelled')"
NEW_CAMPAIGN = "status IN ('pending','running','paused','done','incomplete','cancelled')"


def upgrade() -> None:
    # a plain ADD COLUMN on both backends (batch mode would copy the table on SQLite)
    op.add_column("trials", sa.Column("requeued_at_attempt", sa.Integer(), nullable=False,
                                      server_default=sa.text("0")))
    swap_check("trials", OLD_TRIAL, NEW_TRIAL)
    swap_check("campaigns", OLD_CAMPAIGN, NEW_CAMPAIGN)
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
    swap_check("trials", NEW_TRIAL, OLD_TRIAL)
    swap_check("campaigns", NEW_CAMPAIGN, OLD_CAMPAIGN)
    drop_column("trials", "requeued_at_attempt")
