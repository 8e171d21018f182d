"""What every ``myonode`` command uses: the consoles, the ``--config`` option, the settings (an error exits 2),
the database of those settings, and one way to print a listing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from node.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="settings.toml to use (default: $MYONODE_CONFIG or ./settings.toml)"),
]


def settings_of(config: Path | None) -> Settings:
    """The settings of ``--config``; a wrong file is said on stderr and the command exits 2."""
    try:
        return load_settings(config)
    except SettingsError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def sessions_of(settings: Settings) -> sessionmaker[Session]:
    from storage.database import make_engine, session_factory

    return session_factory(make_engine(settings.storage.database_url))


def print_listing(config: Path | None, columns: tuple[str, ...],
                  rows: Callable[[Session], Iterable[tuple[str, ...]]]) -> None:
    """A list command: ``rows`` read in one session of the database of ``--config``, printed as a table."""
    table = Table(*columns)
    with sessions_of(settings_of(config))() as s:
        for row in rows(s):
            table.add_row(*row)
    console.print(table)


def masked_db(settings: Settings) -> str:
    """The database URL as it may be shown (password masked)."""
    return str(settings.masked()["storage"]["database_url"])
