"""What the sync and asyncio stores share: options, the table, and the stats record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import URL

from .calls import Calls
from .config import engine_arguments, resolve_url
from .errors import AwaitlyStoreError, ConfigurationError
from .schema import qualified_name, workflow_state_table

# Pool options that act when a connection is checked out of the pool (or
# that replace the pool): kept connections would bypass them.
CHECKOUT_TIME_OPTIONS = frozenset({"pool_pre_ping", "pool_recycle", "poolclass"})


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
    # Keep connections between calls: only on an engine the store builds, and
    # not when the caller asked the pool to check connections at checkout.
    keep_connections: bool = False

    @property
    def table_label(self) -> str:
        return qualified_name(self.table)


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
) -> StoreOptions:
    table = workflow_state_table(MetaData(), table_name, schema)
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
        return StoreOptions(None, {}, table, create_table, verify_schema)
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
    keep = not (set(pool or {}) & CHECKOUT_TIME_OPTIONS)
    return StoreOptions(url, engine_arguments(url, pool), table, create_table, verify_schema, keep)


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
