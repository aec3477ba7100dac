"""Alembic environment. The URL comes from the project's settings (EVALFLEET_DATABASE_URL or
the SQLite file under EVALFLEET_HOME) unless the caller put one into the Alembic config."""

from __future__ import annotations

from alembic import context

from orchestrator.config import get_settings, normalize_url
from orchestrator.store.db import make_engine
from orchestrator.store.models import Base

config = context.config
target_metadata = Base.metadata

VIEW_NAMES = {"v_episode_outcomes", "v_success_by_category"}


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    # Views are created by hand in migrations; autogenerate must not treat them as tables.
    return not (type_ == "table" and name in VIEW_NAMES)


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    return normalize_url(url) if url else get_settings().resolved_database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        include_object=include_object,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
