"""What the sync and asyncio stores share: options, the table, and the stats record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import URL

from .calls import Calls
from .config import (
    PSYCOPG_DRIVERS,
    UNSET,
    Unset,
    engine_arguments,
    resolve_url,
    statement_timeout_of,
    take_prepare_threshold,
)
from .errors import AwaitlyStoreError, ConfigurationError
from .schema import qualified_name, regclass_text, workflow_state_table


@dataclass(frozen=True)
class StoreStats:
    """Figures for monitoring; sizes in bytes, None where the backend has no such figure."""

    rows: int
    expired_rows: int
    total_bytes: int | None
    table_bytes: int | None
    index_bytes: int | None


@dataclass(frozen=True)
class StoreOptions:
    """The validated options of one store; ``url`` is None when the caller gave an engine."""

    url: URL | None
    engine_arguments: dict[str, Any]
    table: Table
    create_table: bool
    # With create_table=False: check the table against the model on first use.
    verify_schema: bool
    # ``prepare=`` for each statement on a psycopg connection: None follows the
    # connection's prepare_threshold, and runs the store's statements by name
    # where that is None (``named_statements``: PgBouncer-safe); False never
    # prepares anything (PgBouncer-safe on a caller's engine without touching
    # its settings, and for poolers that pin a session that prepares).
    prepare: bool | None = None
    # Seconds a statement of the store's own may run (waiting for locks
    # included) before the server cancels it; None: no bound.
    statement_timeout: float | None = None

    @property
    def table_label(self) -> str:
        return qualified_name(self.table)

    @property
    def table_relation(self) -> str:
        return regclass_text(self.table)


def store_options(
    *,
    engine: object,
    connection_string: str | URL | None,
    host: str | None,
    port: int | None,
    database: str | None,
    user: str | None,
    password: str | None,
    pool: Mapping[str, Any] | None,
    table_name: str,
    schema: str | None,
    create_table: bool,
    verify_schema: bool,
    asyncio: bool,
    prepare_threshold: int | Unset | None = UNSET,
    statement_timeout: float | None = None,
) -> StoreOptions:
    table = workflow_state_table(MetaData(), table_name, schema)
    timeout = statement_timeout_of(statement_timeout)
    if engine is not None:
        extra = [
            name
            for name, value in (
                ("connection_string", connection_string),
                ("host", host),
                ("port", port),
                ("database", database),
                ("user", user),
                ("password", password),
                ("pool", pool),
            )
            if value is not None
        ]
        if extra:
            raise ConfigurationError(
                f"engine= was given, so {extra} would be ignored: configure the engine instead"
            )
        if isinstance(prepare_threshold, int):
            raise ConfigurationError(
                "with engine=, prepare_threshold may only be None (never prepare the store's "
                "statements); a threshold belongs in the engine's connect_args"
            )
        prepare = None if isinstance(prepare_threshold, Unset) else False
        return StoreOptions(None, {}, table, create_table, verify_schema, prepare, timeout)
    url = resolve_url(
        connection_string=connection_string,
        host=host,
        port=port,
        database=database,
        user=user,
        password=password,
        asyncio=asyncio,
    )
    check_backend(url.get_backend_name())
    url, threshold, given = take_prepare_threshold(url, prepare_threshold)
    if threshold is not None and url.get_driver_name() not in PSYCOPG_DRIVERS:
        raise ConfigurationError("prepare_threshold applies to psycopg 3 (postgresql+psycopg) only")
    arguments = engine_arguments(url, pool, threshold, timeout)
    prepare = False if given and threshold is None else None  # None given: never prepare
    return StoreOptions(url, arguments, table, create_table, verify_schema, prepare, timeout)


def check_backend(name: str) -> str:
    if name not in ("postgresql", "sqlite"):
        raise ConfigurationError(
            f"the {name!r} database is not supported; use PostgreSQL or SQLite"
        )
    return name


def calls_for(dialect_name: str) -> Calls:
    return Calls(check_backend(dialect_name))


def closed_error() -> AwaitlyStoreError:
    return AwaitlyStoreError("the store is closed")


def stats_from(counts: tuple[Any, ...], sizes: tuple[Any, ...]) -> StoreStats:
    def as_int(value: Any) -> int | None:
        return None if value is None else int(value)

    return StoreStats(
        rows=int(counts[0]),
        expired_rows=int(counts[1]),
        total_bytes=as_int(sizes[0]),
        table_bytes=as_int(sizes[1]),
        index_bytes=as_int(sizes[2]),
    )


def wrong_connection(given: object, wanted: str, other_store: str) -> TypeError:
    """``connection=`` of the other kind (sync or asyncio): refused before anything is sent."""
    return TypeError(
        f"connection= must be {wanted}, got {type(given).__name__}; "
        f"if that is the other kind (sync or asyncio), use {other_store}"
    )
