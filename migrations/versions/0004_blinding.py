"""random blind codes unique in the store

Before 0004 a campaign's blind codes were derived from its plan seed and the policy's position,
so every campaign with the default seed called its first policy the same code. From 0004 the
store draws codes at random (secrets) and campaign_policies.blind_code is unique store-wide.

Upgrading a store with data: where several campaign policies share a code, the oldest row
(lowest id) keeps it and every other one gets a fresh random code (not derived from anything;
it avoids every code in use and every policy name); each change is written to the audit log
as a `blind_code_changed` event with the old and the new code. Then a unique index on
blind_code is created (an index, not a table constraint: SQLite adds it in place, without the
table rebuild that the analyst views over campaign_policies would block). Downgrade drops the
index; the new codes stay.

Self-contained on purpose (no import from protocols/ or orchestrator/): a migration must keep
working whatever later code does.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # protocols.planning.BLIND_CODE_ALPHABET
LENGTH = 4
INDEX = "uq_campaign_policies_blind_code"

_cp = sa.table(
    "campaign_policies",
    sa.column("id", sa.Integer),
    sa.column("campaign_id", sa.Integer),
    sa.column("policy_id", sa.Integer),
    sa.column("blind_code", sa.String),
)
_policies = sa.table("policies", sa.column("id", sa.Integer), sa.column("name", sa.String))
_events = sa.table(
    "events",
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("kind", sa.String),
    sa.column("actor", sa.String),
    sa.column("campaign_id", sa.Integer),
    sa.column("payload", sa.JSON),
)


def _fresh_code(used: set[str], names: list[str]) -> str:
    for _ in range(100_000):
        code = "P-" + "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        body = code[2:].lower()
        if code not in used and not any(
            n in body or (len(n) > 2 and n in code.lower()) for n in names
        ):
            return code
    raise RuntimeError(
        "migration 0004: no free blind code left (over a million campaign policies?)"
    )


def _recode_duplicates() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_cp.c.id, _cp.c.campaign_id, _cp.c.blind_code, _policies.c.name)
        .join(_policies, _policies.c.id == _cp.c.policy_id)
        .order_by(_cp.c.id)
    ).all()
    names = sorted({str(r.name).lower() for r in rows})
    used = {r.blind_code for r in rows}
    seen: set[str] = set()
    now = datetime.now(UTC)
    for r in rows:
        if r.blind_code not in seen:
            seen.add(r.blind_code)
            continue
        code = _fresh_code(used, names)
        used.add(code)
        seen.add(code)
        bind.execute(_cp.update().where(_cp.c.id == r.id).values(blind_code=code))
        bind.execute(_events.insert().values(
            at=now, kind="blind_code_changed", actor="migration 0004",
            campaign_id=r.campaign_id,
            payload={"campaign_policy_id": r.id, "old": r.blind_code, "new": code,
                     "reason": "blind codes are unique store-wide from revision 0004"},
        ))


def upgrade() -> None:
    _recode_duplicates()
    op.create_index(INDEX, "campaign_policies", ["blind_code"], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="campaign_policies")
