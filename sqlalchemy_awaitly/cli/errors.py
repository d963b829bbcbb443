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
)

NOT_FOUND = 1
BAD_INPUT = 2
UNREACHABLE = 3
NO_TABLE = 4
BUSY = 5
CORRUPT_ROWS = 6  # a listing that went on past rows it cannot read


class Failure(click.ClickException):
    """A clear one-line error and its exit code (see the README's table)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click's is a class default


def migrate_hint(url: str | None) -> str:
    """How to create the table, quoting the URL without its password."""
    if url is None:
        return "To create the table: sqlalchemy-awaitly migrate --url URL"
    hint = f"To create the table: sqlalchemy-awaitly migrate --url '{shown_url(url)}'"
    if password_of(url):
        hint += f" (with your password in place of {HIDDEN})"
    return hint


@contextlib.contextmanager
def explained(url: str | None) -> Iterator[None]:
    """Turn the store's exceptions into messages and exit codes."""
    try:
        yield
    except (ConfigurationError, InvalidInputError) as e:
        raise Failure(str(e), BAD_INPUT) from None
    except SchemaMismatchError as e:
        raise Failure(f"{e}\n{migrate_hint(url)}", NO_TABLE) from None
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
