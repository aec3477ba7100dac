"""Arms leased in the store: one orchestrator drives an arm at a time.

An orchestrator (`campaign run`, `fleet serve`) leases each arm of its fleet before it probes
or schedules it: robots.lease_holder + robots.lease_expires_at. The lease is renewed with the
trial leases (every lease_s/4), released on a clean exit and runs out when the holder dies,
so a second orchestrator on the same fleet uses only the arms that are free, waits for the
others ("arm-1 is held by ... until ...; waiting") and takes them once freed or expired.

Taking a lease is one conditional UPDATE per arm: on PostgreSQL the row lock makes a second
concurrent UPDATE re-check the condition after the first commits; on SQLite the write
transaction (BEGIN IMMEDIATE) serializes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.store.campaigns import log_event
from orchestrator.store.models import Robot, utcnow
from orchestrator.store.states import EventKind


@dataclass(frozen=True)
class ArmHeld:
    """An arm another orchestrator holds."""

    robot_id: int
    name: str
    holder: str
    expires_at: datetime

    def waiting_line(self) -> str:
        at = self.expires_at
        if at.tzinfo is None:  # SQLite returns naive UTC
            at = at.replace(tzinfo=UTC)
        return (f"{self.name} is held by {self.holder} until "
                f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC; waiting")


@dataclass(frozen=True)
class ArmLeaseResult:
    taken: tuple[int, ...]  # robot ids now leased to the caller
    held: tuple[ArmHeld, ...]  # robot ids someone else holds


def lease_arms(
    s: Session, robot_ids: Iterable[int], *, holder: str, lease_s: float,
    now: datetime | None = None,
) -> ArmLeaseResult:
    """Lease (or renew) each arm that is free, expired, or already ours."""
    now = now or utcnow()
    until = now + timedelta(seconds=lease_s)
    taken: list[int] = []
    held: list[ArmHeld] = []
    for rid in robot_ids:
        res = cast("CursorResult[Any]", s.execute(  # an UPDATE: a cursor result
            update(Robot)
            .where(
                Robot.id == rid,
                or_(Robot.lease_holder.is_(None), Robot.lease_holder == holder,
                    Robot.lease_expires_at.is_(None), Robot.lease_expires_at < now),
            )
            .values(lease_holder=holder, lease_expires_at=until)
            .execution_options(synchronize_session=False)
        ))
        if res.rowcount == 1:
            taken.append(rid)
            continue
        name, other, expires = s.execute(
            select(Robot.name, Robot.lease_holder, Robot.lease_expires_at).where(Robot.id == rid)
        ).one()
        held.append(ArmHeld(rid, name, other or "?", expires or now))
    return ArmLeaseResult(tuple(taken), tuple(held))


def renew_arm_leases(
    s: Session, robot_ids: Iterable[int], *, holder: str, lease_s: float,
    now: datetime | None = None,
) -> list[int]:
    """Extend the caller's arm leases; returns the ids it no longer holds (taken over after
    its lease ran out), which it must stop driving."""
    ids = list(robot_ids)
    result = lease_arms(s, ids, holder=holder, lease_s=lease_s, now=now)
    lost = [h.robot_id for h in result.held]
    for rid in lost:
        log_event(s, EventKind.ARM_LEASE_LOST, robot_id=rid, holder=holder)
    return lost


def release_arms(s: Session, robot_ids: Iterable[int], *, holder: str) -> int:
    """Give the caller's arms back (a clean exit): another orchestrator may take them now."""
    ids = list(robot_ids)
    if not ids:
        return 0
    res = cast("CursorResult[Any]", s.execute(
        update(Robot)
        .where(Robot.id.in_(ids), Robot.lease_holder == holder)
        .values(lease_holder=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    ))
    return int(res.rowcount or 0)
