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
from typing import Any, Self, TypeVar

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


class DatabaseUnavailableError(StoreError):
    """The database stayed unreachable for the whole retry window."""

    def __init__(self, message: str, *, url: str, window_s: float, last_error: str) -> None:
        super().__init__(message)
        self.url, self.window_s, self.last_error = url, window_s, last_error


DEFAULT_RETRY_WINDOW_S = 25.0  # docs/architecture.md, "Faults"; EVALFLEET_DB_RETRY_WINDOW_S


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
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so we can BEGIN IMMEDIATE ourselves.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front: a later upgrade from a read lock would fail
        # with SQLITE_BUSY despite busy_timeout. Readers use a deferred BEGIN.
        if conn.get_execution_options().get(_READONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    """The results store: an engine plus session factories. A context manager."""

    def __init__(
        self,
        engine: Engine,
        *,
        check_schema: bool = True,
        retry_window_s: float = DEFAULT_RETRY_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.retry_window_s = retry_window_s
        self._clock, self._sleep = clock, sleep  # injectable: tests fake a long outage
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
            return cls(engine, check_schema=check_schema,
                       retry_window_s=settings.db_retry_window_s)
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
        self, fn: Callable[[Session], T], *, window_s: float | None = None,
        first_delay_s: float = 0.1,
    ) -> T:
        """Run fn in a write transaction, retrying while the database is unreachable
        (OperationalError: connection lost or refused, SQLite locked) with exponential backoff
        (0.1 s doubling to 2 s) for up to `window_s` (default: this store's retry window,
        EVALFLEET_DB_RETRY_WINDOW_S); then DatabaseUnavailableError. Each try is one whole
        transaction, rolled back on error, so nothing is half-written."""
        window = self.retry_window_s if window_s is None else window_s
        deadline = self._clock() + window
        delay = first_delay_s
        attempts = 0
        while True:
            attempts += 1
            try:
                with self.write() as s:
                    return fn(s)
            except OperationalError as e:
                left = deadline - self._clock()
                if left <= 0:
                    last = str(e.orig if e.orig is not None else e).splitlines()[0][:300]
                    raise DatabaseUnavailableError(
                        f"database at {self.url} unreachable for {window:.0f} s "
                        f"({attempts} attempts): {last}; check the server and "
                        "EVALFLEET_DATABASE_URL",
                        url=self.url, window_s=window, last_error=last,
                    ) from e
                self._sleep(min(delay, left))
                delay = min(delay * 2, 2.0)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
