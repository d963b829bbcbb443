"""Durable-workflow state for SQLAlchemy apps, row-compatible with awaitly-postgres."""

from .aio import AsyncPostgresKeyValueStore, AsyncSQLAlchemyKeyValueStore
from .base import StoreStats
from .errors import (
    AwaitlyStoreError,
    ConfigurationError,
    CorruptStateError,
    CredentialsRejectedError,
    DatabaseNotFoundError,
    InvalidInputError,
    OutcomeUnknownError,
    PoolExhaustedError,
    SchemaMismatchError,
    StatementTimeoutError,
    StoreBusyError,
    StoreUnavailableError,
    TableMissingError,
    TransactionConflictError,
)
from .persistence import (
    DEFAULT_PREFIX,
    AsyncStatePersistence,
    StatePersistence,
    create_async_postgres_persistence,
    create_postgres_persistence,
    create_state_persistence,
)
from .schema import DEFAULT_TABLE_NAME, Base, WorkflowState, workflow_state_table
from .store import PostgresKeyValueStore, SQLAlchemyKeyValueStore

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TABLE_NAME",
    "AsyncPostgresKeyValueStore",
    "AsyncSQLAlchemyKeyValueStore",
    "AsyncStatePersistence",
    "AwaitlyStoreError",
    "Base",
    "ConfigurationError",
    "CorruptStateError",
    "CredentialsRejectedError",
    "DatabaseNotFoundError",
    "InvalidInputError",
    "OutcomeUnknownError",
    "PoolExhaustedError",
    "PostgresKeyValueStore",
    "SQLAlchemyKeyValueStore",
    "SchemaMismatchError",
    "StatePersistence",
    "StatementTimeoutError",
    "StoreBusyError",
    "StoreStats",
    "StoreUnavailableError",
    "TableMissingError",
    "TransactionConflictError",
    "WorkflowState",
    "create_async_postgres_persistence",
    "create_postgres_persistence",
    "create_state_persistence",
    "workflow_state_table",
]
