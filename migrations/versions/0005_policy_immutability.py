"""immutable policies: no schema change

`policy register` enforces immutability in code (orchestrator/store/policies.py): a name+version
is never rewritten; `--force` replaces only a policy no episode has used, audited as
`policy_replaced`. This revision only marks the release in the chain.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # nothing to change in the schema


def downgrade() -> None:
    pass
