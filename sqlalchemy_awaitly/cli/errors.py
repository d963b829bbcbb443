"""What the command line says, and exits with, when the database is not as asked."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click
from sqlalchemy.exc import DBAPIError, OperationalError

from ..config import HIDDEN, password_of, shown_url
from ..errors import (
    ConfigurationError,
    CorruptStateError,
    InvalidInputError,
    SchemaMismatchError,
    StoreBusyError,
    StoreUnavailableError,
    TableMissingError,
)
from ..schema import DEFAULT_TABLE_NAME

NOT_FOUND = 1
BAD_INPUT = 2
UNREACHABLE = 3
NO_TABLE = 4
BUSY = 5
CORRUPT_ROWS = 6  # a listing that went on past rows it cannot read


class Failure(click.ClickException):
    """A clear one-line error and its exit code (see docs/cli.md)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click's is a class default


def migrate_command(
    url: str | None, table: str = DEFAULT_TABLE_NAME, schema: str | None = None
) -> str:
    """The ``migrate`` command line for this table, quoting the URL without its password."""
    words = ["sqlalchemy-awaitly migrate", f"--url '{shown_url(url)}'" if url else "--url URL"]
    if table != DEFAULT_TABLE_NAME:
        words.append(f"--table {table}")
    if schema is not None:
        words.append(f"--schema {schema}")
    command = " ".join(words)
    if url and password_of(url):
        command += f" (with your password in place of {HIDDEN})"
    return command


def _table_advice(
    error: SchemaMismatchError, url: str | None, table: str, schema: str | None
) -> str:
    """What to do about a missing or different table, as commands (not library options)."""
    label = f"{schema}.{table}" if schema else table
    if isinstance(error, TableMissingError):
        command = migrate_command(url, table, schema)
        return f"the table {label} does not exist. To create it:\n  {command}"
    listing = "".join(f"\n  - {p}" for p in error.problems)
    return (
        f"the table {label} differs from the model:{listing}\n"
        "Alter it to match, or move its rows and drop it; then create it with:\n"
        f"  {migrate_command(url, table, schema)}"
    )


@contextlib.contextmanager
def explained(
    url: str | None, table: str = DEFAULT_TABLE_NAME, schema: str | None = None
) -> Iterator[None]:
    """Turn the store's exceptions into messages and exit codes."""
    try:
        yield
    except (ConfigurationError, InvalidInputError) as e:
        raise Failure(str(e), BAD_INPUT) from None
    except SchemaMismatchError as e:
        raise Failure(_table_advice(e, url, table, schema), NO_TABLE) from None
    except CorruptStateError as e:
        raise Failure(str(e), NOT_FOUND) from None
    except StoreBusyError as e:
        raise Failure(f"the database is busy, nothing was changed; try again: {e}", BUSY) from None
    except StoreUnavailableError as e:  # OutcomeUnknownError, a refused password, ...
        raise Failure(str(e), UNREACHABLE) from None
    except OperationalError as e:
        reason = getattr(e, "orig", None) or e
        raise Failure(f"cannot reach the database: {reason}".strip(), UNREACHABLE) from None
    except DBAPIError as e:
        raise Failure(f"the database refused: {e.orig}", UNREACHABLE) from None
