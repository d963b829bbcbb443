"""Workflow state on top of a key/value store: awaitly's ``createStatePersistence``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

from .aio import AsyncSQLAlchemyKeyValueStore, AsyncTransaction
from .errors import InvalidInputError
from .store import SQLAlchemyKeyValueStore, Transaction
from .validation import Ttl, check_pattern
from .wire.documents import Snapshot, decode_state, encode_snapshot

DEFAULT_PREFIX = "workflow:state:"


def _check_run_id(run_id: object) -> str:
    if not isinstance(run_id, str):
        raise TypeError(f"run_id must be str, got {type(run_id).__name__}")
    if not run_id:
        raise InvalidInputError("run_id must not be empty")
    return run_id


class _PrefixedKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = check_pattern(prefix)

    def key(self, run_id: str) -> str:
        return self.prefix + _check_run_id(run_id)

    def run_ids(self, keys: list[str]) -> list[str]:
        cut = len(self.prefix)
        return [k[cut:] for k in keys]


class StatePersistence(_PrefixedKeys):
    """Saves and loads workflow snapshots under ``prefix + run_id``."""

    def __init__(self, store: SQLAlchemyKeyValueStore, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(prefix)
        self.store = store

    def save(
        self,
        run_id: str,
        state: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: Ttl = None,
        connection: Transaction | None = None,
    ) -> None:
        """Upsert the snapshot (``metadata`` merged into its own)."""
        key = self.key(run_id)
        self.store.set(key, encode_snapshot(state, metadata), ttl, connection=connection)

    def load(self, run_id: str, *, connection: Transaction | None = None) -> Snapshot | None:
        """The stored snapshot, None if there is none; raises CorruptStateError if unreadable."""
        key = self.key(run_id)
        raw = self.store.get(key, connection=connection)
        return None if raw is None else decode_state(key, raw)

    def load_raw(self, run_id: str, *, connection: Transaction | None = None) -> str | None:
        return self.store.get(self.key(run_id), connection=connection)

    def delete(self, run_id: str, *, connection: Transaction | None = None) -> bool:
        return self.store.delete(self.key(run_id), connection=connection)

    def list(self) -> list[str]:
        """Run ids stored under this prefix, in byte order."""
        return self.run_ids(self.store.keys_with_prefix(self.prefix))

    def close(self) -> None:
        self.store.close()


class AsyncStatePersistence(_PrefixedKeys):
    """The asyncio twin of :class:`StatePersistence`."""

    def __init__(self, store: AsyncSQLAlchemyKeyValueStore, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(prefix)
        self.store = store

    async def save(
        self,
        run_id: str,
        state: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: Ttl = None,
        connection: AsyncTransaction | None = None,
    ) -> None:
        key = self.key(run_id)
        await self.store.set(key, encode_snapshot(state, metadata), ttl, connection=connection)

    async def load(
        self, run_id: str, *, connection: AsyncTransaction | None = None
    ) -> Snapshot | None:
        key = self.key(run_id)
        raw = await self.store.get(key, connection=connection)
        return None if raw is None else decode_state(key, raw)

    async def load_raw(
        self, run_id: str, *, connection: AsyncTransaction | None = None
    ) -> str | None:
        return await self.store.get(self.key(run_id), connection=connection)

    async def delete(self, run_id: str, *, connection: AsyncTransaction | None = None) -> bool:
        return await self.store.delete(self.key(run_id), connection=connection)

    async def list(self) -> list[str]:
        return self.run_ids(await self.store.keys_with_prefix(self.prefix))

    async def close(self) -> None:
        await self.store.close()


@overload
def create_state_persistence(
    store: SQLAlchemyKeyValueStore, prefix: str = ...
) -> StatePersistence: ...
@overload
def create_state_persistence(
    store: AsyncSQLAlchemyKeyValueStore, prefix: str = ...
) -> AsyncStatePersistence: ...
def create_state_persistence(
    store: SQLAlchemyKeyValueStore | AsyncSQLAlchemyKeyValueStore,
    prefix: str = DEFAULT_PREFIX,
) -> StatePersistence | AsyncStatePersistence:
    """State persistence over ``store`` (sync or asyncio, whichever it is)."""
    if isinstance(store, AsyncSQLAlchemyKeyValueStore):
        return AsyncStatePersistence(store, prefix)
    if isinstance(store, SQLAlchemyKeyValueStore):
        return StatePersistence(store, prefix)
    raise TypeError(f"expected a key/value store, got {type(store).__name__}")


def create_postgres_persistence(
    connection_string: str | None = None, *, prefix: str = DEFAULT_PREFIX, **options: Any
) -> StatePersistence:
    """Build a store from the same options as the store class, set it up, and wrap it.

    Like awaitly-postgres, the table is checked (and created if allowed) before
    this returns, so a bad URL or a missing table fails here, not mid-workflow.
    """
    store = SQLAlchemyKeyValueStore(connection_string, **options)
    try:
        store.setup()
    except BaseException:
        store.close()
        raise
    return StatePersistence(store, prefix)


async def create_async_postgres_persistence(
    connection_string: str | None = None, *, prefix: str = DEFAULT_PREFIX, **options: Any
) -> AsyncStatePersistence:
    """The asyncio twin of :func:`create_postgres_persistence`."""
    store = AsyncSQLAlchemyKeyValueStore(connection_string, **options)
    try:
        await store.setup()
    except BaseException:
        await store.close()
        raise
    return AsyncStatePersistence(store, prefix)
