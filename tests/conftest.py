"""Shared fixtures: stores on SQLite (always) and PostgreSQL (when EVALFLEET_TEST_POSTGRES_URL
is set; CI sets it). Each PostgreSQL test gets a fresh database, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# The CLIs' rich consoles are module globals that take their width from COLUMNS when first
# imported; without a terminal that is 80 columns, and which test imports them first differs
# between a serial and a parallel (xdist) run. One width for every test's CLI output:
os.environ["COLUMNS"] = "200"

PG_ENV = "EVALFLEET_TEST_POSTGRES_URL"
PG_SKIP = (
    f"{PG_ENV} is not set: PostgreSQL store tests skipped "
    "(set it, e.g. postgresql://postgres@127.0.0.1:5432/test, to run them)"
)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own EVALFLEET_HOME; no test touches ~/.local/share/evalfleet."""
    from orchestrator.config import get_settings

    home = tmp_path / "evalfleet-home"
    monkeypatch.setenv("EVALFLEET_HOME", str(home))
    monkeypatch.delenv("EVALFLEET_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def _pg_admin_url() -> str | None:
    return os.environ.get(PG_ENV)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    base = _pg_admin_url()
    if not base:
        pytest.skip(PG_SKIP)
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from orchestrator.config import normalize_url

    admin_url = make_url(normalize_url(base))
    name = f"evalfleet_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # in CI the server must be there: fail loudly, never skip silently
        admin.dispose()
        raise RuntimeError(f"{PG_ENV}={base} is set but the server is unusable: {e}") from e
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url: str):  # type: ignore[no-untyped-def]
    """A migrated, empty store on each backend."""
    from orchestrator.store import migrate
    from orchestrator.store.db import Store, make_engine

    engine = make_engine(db_url)
    migrate.upgrade(engine)
    s = Store(engine)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from orchestrator.store import migrate
    from orchestrator.store.db import Store, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate.upgrade(engine)
    s = Store(engine)
    yield s
    s.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The local Ray that tests/integration/fleet_support.ray_local hands from module to
    module ends with the session."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
