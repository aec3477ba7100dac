"""Helpers shared by the CLI modules: clean one-line failures and opening the store."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:  # imported lazily: `evalfleet fleet stop` must start fast (no SQLAlchemy)
    from orchestrator.store.db import Store

err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def open_store(*, check_schema: bool = True) -> Store:
    from orchestrator.store.db import SchemaBehindError, Store, StoreError

    try:
        return Store.open(check_schema=check_schema)
    except SchemaBehindError as e:
        fail(str(e))
    except StoreError as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001 - connection refused, bad URL, ...
        fail(f"cannot open the store: {e.__class__.__name__}: {e}".splitlines()[0])
