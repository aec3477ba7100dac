"""typed seams: no schema change

Issue 10 gave statuses, event kinds and termination reasons StrEnums
(orchestrator/store/states.py) whose values are the strings already stored, and whose members
are exactly what the CHECK constraints of 0001/0007 admit (tests/unit/test_states_enums.py);
aborted episodes now keep their steps and media (rows the schema always allowed); the arms'
declared spaces go into the existing robots.capabilities JSON. So nothing changes on disk: this
revision only marks the schema as the one issue 10's code reads and writes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
