"""labels bound to what was seen (label history, undo)

Adds label_versions: every version of every human label (saves and undos), the history that
the Label page's one-key undo restores from. labels keeps holding the current label, so the
analyst views (v_episode_outcomes, ...) are unchanged. Existing human labels are copied in as
their current version.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "label_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("evaluator", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("failure_mode", sa.String(length=200), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("render_token", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("action IN ('saved','undone')", name=op.f("ck_label_versions_action")),
        sa.CheckConstraint("source IN ('human','sim')", name=op.f("ck_label_versions_source")),
        sa.ForeignKeyConstraint(
            ["episode_id"],
            ["episodes.id"],
            name=op.f("fk_label_versions_episode_id_episodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_versions")),
        sa.UniqueConstraint(
            "episode_id", "source", "evaluator", "version",
            name=op.f("uq_label_versions_episode_id_source_evaluator_version"),
        ),
    )
    op.create_index(
        "ix_label_versions_evaluator_id", "label_versions", ["evaluator", "id"], unique=False
    )
    # the history starts with every human label as it is now
    op.execute(
        "INSERT INTO label_versions (episode_id, source, evaluator, version, action, success, "
        "progress, failure_mode, notes, render_token, at) "
        "SELECT episode_id, source, evaluator, version, 'saved', success, progress, "
        "failure_mode, notes, NULL, updated_at FROM labels WHERE source = 'human' ORDER BY id"
    )


def downgrade() -> None:
    op.drop_index("ix_label_versions_evaluator_id", table_name="label_versions")
    op.drop_table("label_versions")
