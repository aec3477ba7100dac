"""Settings: where the data lives and which database holds the store.

Environment variables (pydantic-settings, prefix EVALFLEET_):
  EVALFLEET_HOME          data dir (default ~/.local/share/evalfleet): SQLite file, media, keys
  EVALFLEET_DATABASE_URL  SQLAlchemy URL (default sqlite:///$EVALFLEET_HOME/evalfleet.db);
                          PostgreSQL: postgresql+psycopg://user@host:5432/db
  EVALFLEET_STAFF         dashboard staff: comma-separated names / e-mails (see docs/dashboard.md)
  EVALFLEET_STAFF_GROUPS  OIDC groups whose members are staff (default evalfleet-staff)
  EVALFLEET_DB_RETRY_WINDOW_S  how long the orchestrator retries an unreachable database
                          before it stops the run (default 25 s)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "evalfleet"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVALFLEET_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = None
    sqlite_busy_timeout_ms: int = 30_000
    # Dashboard roles (dashboard/visibility.py): comma-separated staff names / e-mails and
    # OIDC groups; everyone else is an evaluator and sees blind views only.
    staff: str = ""
    staff_groups: str = "evalfleet-staff"
    db_retry_window_s: float = Field(default=25.0, gt=0)

    @property
    def media_dir(self) -> Path:
        return self.home / "media"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_url(self.database_url)
        return f"sqlite:///{self.home / 'evalfleet.db'}"


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and route them to psycopg 3."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
