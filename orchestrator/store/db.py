"""Engines and sessions for the store: SQLite (WAL, foreign keys, BEGIN IMMEDIATE) or PostgreSQL.

    store = Store.open()                # settings' URL; refuses a schema that is behind
    with store.write() as s: ...        # one transaction; SQLite: BEGIN IMMEDIATE
    with store.read() as s: ...         # read-only snapshot; SQLite: deferred BEGIN
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.config import Settings, get_settings, normalize_url

T = TypeVar("T")

_READONLY = "evalfleet_readonly"


class StoreError(RuntimeError):
    """A store problem a user can act on (the message says what to do)."""


class SchemaBehindError(StoreError):
    pass


def make_engine(url: str, *, busy_timeout_ms: int = 30_000, echo: bool = False) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
        )
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        connect_args={"connect_timeout": 10},
    )


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Take transaction control from the sqlite3 module so we can BEGIN IMMEDIATE ourselves.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        # Writers take the write lock up front: a later upgrade from a read lock would fail
        # with SQLITE_BUSY despite busy_timeout. Readers use a deferred BEGIN.
        if conn.get_execution_options().get(_READONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    """The results store: an engine plus session factories. A context manager."""

    def __init__(self, engine: Engine, *, check_schema: bool = True) -> None:
        self.engine = engine
        self._write = sessionmaker(engine, expire_on_commit=False)
        self._read = sessionmaker(
            engine.execution_options(**{_READONLY: True}), expire_on_commit=False
        )
        if check_schema:
            from orchestrator.store.migrate import ensure_schema_current

            ensure_schema_current(engine)

    @classmethod
    def open(
        cls, url: str | None = None, *, settings: Settings | None = None, check_schema: bool = True
    ) -> Store:
        settings = settings or get_settings()
        engine = make_engine(
            url or settings.resolved_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )
        try:
            return cls(engine, check_schema=check_schema)
        except Exception:
            engine.dispose()
            raise

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: commits on success, rolls back on any error."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    def retrying(
        self, fn: Callable[[Session], T], *, attempts: int = 8, first_delay_s: float = 0.1
    ) -> T:
        """Run fn in a write transaction, retrying a short database outage with backoff."""
        delay = first_delay_s
        for attempt in range(1, attempts + 1):
            try:
                with self.write() as s:
                    return fn(s)
            except OperationalError as e:
                if attempt == attempts:
                    raise StoreError(
                        f"database at {self.url} unreachable after {attempts} attempts: {e.orig}; "
                        "check the server and EVALFLEET_DATABASE_URL"
                    ) from e
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
