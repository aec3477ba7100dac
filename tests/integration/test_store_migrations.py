"""Migrations on SQLite and PostgreSQL: up from empty, down to base, up again; no drift."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from orchestrator.store import migrate
from orchestrator.store.db import SchemaBehindError, Store, make_engine
from orchestrator.store.models import Base

TABLES = {
    "robots", "policies", "protocols", "tasks", "campaigns", "campaign_policies", "trials",
    "episodes", "steps", "labels", "label_versions", "events",
}
VIEWS = {"v_episode_outcomes", "v_success_by_category"}


def _include(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    return not (type_ == "table" and name in VIEWS)


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        insp = inspect(engine)
        assert TABLES <= set(insp.get_table_names())
        assert VIEWS <= set(insp.get_view_names())
        assert migrate.current_revision(engine) == migrate.head_revision()
        migrate.downgrade(engine, "base")
        insp = inspect(engine)
        assert not (TABLES & set(insp.get_table_names()))
        assert not (VIEWS & set(insp.get_view_names()))
        migrate.upgrade(engine)
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_models_and_migrations_do_not_drift(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"include_object": _include, "compare_type": True}
            )
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
    finally:
        engine.dispose()


def test_store_refuses_a_schema_that_is_behind(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with pytest.raises(SchemaBehindError, match="evalfleet db upgrade"):
            Store(engine)
        migrate.upgrade(engine, "0001")
        with pytest.raises(SchemaBehindError, match=r"0001.*evalfleet db upgrade"):
            Store(engine)
        migrate.upgrade(engine)
        Store(engine)  # now fine
    finally:
        engine.dispose()


def test_sqlite_is_wal_with_foreign_keys(sqlite_store: Store) -> None:
    with sqlite_store.read() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert s.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
