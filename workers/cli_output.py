"""How the CLI talks: rich tables for lists, spinners while people wait, and exit codes that
mean something (docs/operations.md, "CLI exit codes").

    0  done
    1  the operation ran and failed (a task failed, a backup is corrupt, ...)
    2  bad usage or configuration (click's usage errors, `path: reason` config problems)
    3  not found (no such incident, check, silence, backup)
    4  timed out waiting (`tasks run --wait`, `checks run --wait`)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click
from rich.console import Console
from rich.table import Table

from models.config import ConfigError

if TYPE_CHECKING:
    from models.config import EventopsConfig

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_TIMEOUT = 4

# Wide enough that a piped table keeps one row per line (no terminal to measure).
PIPE_WIDTH = 200

STATE_STYLES = {
    "up": "green",
    "down": "bold red",
    "failing": "yellow",
    "unknown": "dim",
    "disabled": "dim",
    "open": "bold red",
    "acknowledged": "yellow",
    "resolved": "green",
    "critical": "bold red",
    "warning": "yellow",
    "info": "cyan",
    "succeeded": "green",
    "failed": "bold red",
    "running": "yellow",
    "verified": "green",
    "corrupt": "bold red",
}


class NotFound(click.ClickException):
    """No such incident, check, silence or backup: exit 3."""

    exit_code = EXIT_NOT_FOUND


class TimedOut(click.ClickException):
    """Gave up waiting: exit 4."""

    exit_code = EXIT_TIMEOUT


def console(stderr: bool = False) -> Console:
    stream: TextIO = sys.stderr if stderr else sys.stdout
    terminal = os.isatty(stream.fileno()) if _has_fileno(stream) else False
    return Console(
        file=stream,
        width=None if terminal else PIPE_WIDTH,
        # Colour only on a terminal; pipes and files get plain text.
        no_color=not terminal,
        highlight=False,
        soft_wrap=False,
    )


def _has_fileno(stream: TextIO) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):  # click's test runner has none
        return False
    return True


def styled(value: Any) -> str:
    text = "" if value is None else str(value)
    style = STATE_STYLES.get(text)
    return f"[{style}]{text}[/]" if style else text.replace("[", "\\[")


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    right: Sequence[str] = (),
) -> None:
    """A table on stdout: state words coloured on a terminal, plain when piped."""
    table = Table(title=title, header_style="bold", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(styled(cell) for cell in row))
    console().print(table)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@contextlib.contextmanager
def waiting(message: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while something runs (only on a terminal,
    so stdout stays clean for scripts)."""
    err = console(stderr=True)
    if not err.is_terminal:
        yield
        return
    with err.status(message, spinner="dots"):
        yield


def fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"eventops: {message}", err=True)
    sys.exit(code)


def config_errors_exit_2(command: F) -> F:
    """A bad config or environment prints one line per problem and exits 2, no traceback.

    Every command group uses this one (workers/cli_*.py import it from here, not from
    workers.cli, which imports them to register their groups)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as error:
            click.echo("eventops: the configuration has problems:", err=True)
            for line in error.problems:
                click.echo(f"  {line}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def database_refusal_exits_1(message: str) -> Iterator[None]:
    """A statement the database refuses ends the command with `message`, the database's
    reason and exit 1, never a traceback. Only the first line of the reason: its DETAIL and
    CONTEXT lines may quote the row, and a row may hold a check URL's credentials."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError as error:
        if _is_connection_failure(error):
            raise  # EventopsGroup names the database that cannot be reached
        fail(f"{message}: {_first_line(error)}")


class EventopsGroup(click.Group):
    """The `eventops` group: a database or broker that cannot be reached is one line naming
    it and exit 1, never a traceback (the driver's first line says host, port and why; it
    never holds the password)."""

    def invoke(self, ctx: click.Context) -> Any:
        import psycopg
        import redis
        from sqlalchemy.exc import OperationalError

        try:
            return super().invoke(ctx)
        except (OperationalError, psycopg.OperationalError) as error:
            if not _is_connection_failure(error):
                raise
            fail(f"cannot reach the database: {_first_line(error)}")
        except (redis.ConnectionError, redis.TimeoutError) as error:
            fail(f"cannot reach the broker (Redis): {_first_line(error)}")


def _is_connection_failure(error: Exception) -> bool:
    # A statement timeout or a lock timeout is an OperationalError too, but a real problem
    # worth its traceback; only a failed connection is an environment problem.
    cause = getattr(error, "orig", None) or error
    return type(cause).__name__ == "OperationalError" and "connection" in str(cause).lower()


def _first_line(error: Exception) -> str:
    cause = getattr(error, "orig", None) or error
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


def checked_config() -> EventopsConfig:
    """The running config (validated once per process; a bad one raises ConfigError)."""
    from workers.settings import get_config

    return get_config()
