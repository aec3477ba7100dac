"""sequential questions, success detectors, audit sampling (issue 13)

- campaign_questions: what a campaign asks (pair or threshold, category, error rates, cap),
  fixed at creation, with the anytime-valid test's current standing (protocols.sequential).
- trials.status gains `not_needed`: a trial whose campaign's questions were all decided
  before it was leased; never leased, not counted against the campaign.
- detectors: registered success detectors (kind, config, checksum), immutable like policies.
- labels: source `auto` (a detector's label) with detector_id and detector_checksum; an auto
  label without a checksum is refused by the CHECK.
- campaigns.audit_rate: the known probability with which an auto-labelled episode is drawn
  for a human audit (NULL: no audit sampling).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.ddl import drop_column, swap_check

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_TRIAL = "status IN ('pending','leased','done','given_up','cancelled')"
NEW_TRIAL = "status IN ('pending','leased','done','given_up','cancelled','not_needed')"
OLD_SOURCE = "source IN ('human','sim')"
NEW_SOURCE = "source IN ('human','sim') OR (source = 'auto' AND detector_checksum IS NOT NULL)"
QUESTION_STATE = "state IN ('running','a_better','b_better','no_difference','cap_reached')"
QUESTION_KIND = "kind IN ('pair','threshold')"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "detectors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("checksum", sa.String(length=80), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detectors")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_detectors_name_version")),
    )
    op.create_table(
        "campaign_questions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("policy_a_id", sa.Integer(), nullable=False),
        sa.Column("policy_b_id", sa.Integer(), nullable=True),
        sa.Column("category", sa.String(length=50), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("power", sa.Float(), nullable=False),
        sa.Column("min_effect", sa.Float(), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=False),
        sa.Column("two_sided", sa.Boolean(), nullable=False),
        sa.Column("discordance", sa.Float(), nullable=False),
        sa.Column("fixed_n", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("outcomes", sa.Integer(), nullable=False),
        sa.Column("late", sa.Integer(), nullable=False),
        sa.Column("e_value", sa.Float(), nullable=False),
        sa.Column("decided_after", sa.Integer(), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("trials_saved", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(QUESTION_STATE, name=op.f("ck_campaign_questions_state")),
        sa.CheckConstraint(QUESTION_KIND, name=op.f("ck_campaign_questions_kind")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE",
                                name=op.f("fk_campaign_questions_campaign_id_campaigns")),
        sa.ForeignKeyConstraint(["policy_a_id"], ["campaign_policies.id"],
                                name=op.f("fk_campaign_questions_policy_a_id_campaign_policies")),
        sa.ForeignKeyConstraint(["policy_b_id"], ["campaign_policies.id"],
                                name=op.f("fk_campaign_questions_policy_b_id_campaign_policies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_questions")),
        sa.UniqueConstraint("campaign_id", "position",
                            name=op.f("uq_campaign_questions_campaign_id_position")),
    )
    # plain ADD COLUMNs on both backends (batch mode would copy the tables on SQLite). SQLite
    # cannot add a foreign key to an existing table, so labels.detector_id carries no declared
    # reference on either backend (docs/schema.md); the store writes it from detectors.id and
    # detectors are never deleted.
    op.add_column("campaigns", sa.Column("audit_rate", sa.Float(), nullable=True))
    op.add_column("labels", sa.Column("detector_id", sa.Integer(), nullable=True))
    op.add_column("labels", sa.Column("detector_checksum", sa.String(length=80), nullable=True))
    swap_check("labels", OLD_SOURCE, NEW_SOURCE, name="source")
    swap_check("trials", OLD_TRIAL, NEW_TRIAL)


def downgrade() -> None:
    # auto labels and not-needed trials do not exist before this revision: the labels go,
    # the trials go back to pending (they were never run)
    op.execute(sa.text("DELETE FROM labels WHERE source = 'auto'"))
    op.execute(sa.text("UPDATE trials SET status = 'pending' WHERE status = 'not_needed'"))
    swap_check("trials", NEW_TRIAL, OLD_TRIAL)
    swap_check("labels", NEW_SOURCE, OLD_SOURCE, name="source")
    drop_column("labels", "detector_checksum")
    drop_column("labels", "detector_id")
    drop_column("campaigns", "audit_rate")
    op.drop_table("campaign_questions")
    op.drop_table("detectors")
