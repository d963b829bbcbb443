"""Exceptions the store raises, so callers can tell bad input from a bad database."""

from __future__ import annotations


class AwaitlyStoreError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInputError(AwaitlyStoreError, ValueError):
    """A key, value, TTL or name was rejected before anything was written."""


class ConfigurationError(AwaitlyStoreError, ValueError):
    """The store was not told where its database is, or was told two things."""


class SchemaMismatchError(AwaitlyStoreError):
    """The table differs from the model, and the store may not change it.

    ``problems`` lists each difference; the message names the migration command.
    """

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class TableMissingError(SchemaMismatchError):
    """The state table does not exist and the store may not create it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, [message])


class StoreUnavailableError(AwaitlyStoreError):
    """The database could not be reached, or the connection broke under a call that is
    safe to repeat: repeating it is safe.

    Raised after the store has already repeated what it safely could (see
    docs/errors.md).
    """


class OutcomeUnknownError(StoreUnavailableError):
    """The connection broke after the statement was sent: it may or may not have committed.

    Only for calls whose answer a repeat would falsify (``add``, ``delete``,
    ``delete_many``, ...). Read the state back before acting on it.
    """


class CredentialsRejectedError(StoreUnavailableError):
    """The server refused the user name or password: retrying will not help."""


class DatabaseNotFoundError(StoreUnavailableError):
    """The server has no such database, or the SQLite file cannot be opened or created
    (its folder is missing or not writable): retrying will not help."""


class StoreBusyError(AwaitlyStoreError):
    """The database is reachable but could not serve the call now; nothing was written.

    Repeating the call later is safe. The subclasses say what was busy.
    """


class PoolExhaustedError(StoreBusyError, TimeoutError):
    """Every connection of the pool stayed in use for the pool's whole ``pool_timeout``."""


class StatementTimeoutError(StoreBusyError, TimeoutError):
    """The statement ran past ``statement_timeout`` (often: waiting for a lock held elsewhere);
    the server cancelled it, so it wrote nothing."""


class TransactionConflictError(StoreBusyError):
    """A deadlock or serialization failure: the server rolled the transaction back.

    The store's own statements lock rows in one order and cannot deadlock each
    other; this comes from a caller's transaction that the call joined.
    """


class CorruptStateError(AwaitlyStoreError):
    """A stored row is not a workflow document this version understands.

    Raised instead of treating the row as missing: a missing row would make
    the runner start the workflow over and repeat its side effects.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"corrupt workflow state under key {key!r}: {reason}")
        self.key = key
        self.reason = reason
