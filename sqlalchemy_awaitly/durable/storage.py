"""What a run asks of its store: the key/value calls, typed, for sync and for asyncio runs.

The runner reaches its store only through these protocols. The package's
stores fit them as they are (``SQLAlchemyKeyValueStore`` and ``MemoryStore``
the sync ones, ``AsyncSQLAlchemyKeyValueStore`` the asyncio one); a
``MemoryStore`` serves an asyncio run through :class:`AsyncMemory`. A store on
a database is also ``Transactional``: a transactional step's checkpoint joins
the step's own transaction there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .memory import MemoryStore

if TYPE_CHECKING:
    from ..aio import AsyncSQLAlchemyKeyValueStore
    from ..store import SQLAlchemyKeyValueStore


class KeyValue(Protocol):
    """A sync run's store: every call the runner makes, and no other."""

    def get(self, key: str) -> str | None: ...
    def get_many(self, keys: Iterable[str]) -> dict[str, str]: ...
    def keys_with_prefix(self, prefix: str) -> list[str]: ...
    def set(self, key: str, value: str, ttl: float | None = None) -> None: ...
    def add(self, key: str, value: str, ttl: float | None = None) -> bool: ...
    def add_and_get(
        self, key: str, value: str, ttl: float | None = None, *, other_key: str
    ) -> tuple[bool, str | None]: ...
    def touch(self, key: str, ttl: float | None, *, if_value: str | None = None) -> bool: ...
    def delete(self, key: str, *, if_value: str | None = None) -> bool: ...
    def delete_many(self, keys: Iterable[str]) -> int: ...
    def set_guarded(
        self, key: str, value: str, ttl: float | None = None, *, guard_key: str, guard_value: str
    ) -> bool: ...
    def delete_guarded(
        self, key: str, *, guard_key: str, guard_value: str, release: bool = False
    ) -> bool: ...


class Transactional(KeyValue, Protocol):
    """A sync store on a database: checkpoints may join a step's transaction."""

    @property
    def engine(self) -> Engine: ...
    def set(
        self,
        key: str,
        value: str,
        ttl: float | None = None,
        *,
        connection: Connection | None = None,
    ) -> None: ...
    def set_guarded(
        self,
        key: str,
        value: str,
        ttl: float | None = None,
        *,
        guard_key: str,
        guard_value: str,
        connection: Connection | None = None,
    ) -> bool: ...


class AsyncKeyValue(Protocol):
    """An asyncio run's store: the calls of :class:`KeyValue`, awaited."""

    async def get(self, key: str) -> str | None: ...
    async def get_many(self, keys: Iterable[str]) -> dict[str, str]: ...
    async def keys_with_prefix(self, prefix: str) -> list[str]: ...
    async def set(self, key: str, value: str, ttl: float | None = None) -> None: ...
    async def add(self, key: str, value: str, ttl: float | None = None) -> bool: ...
    async def add_and_get(
        self, key: str, value: str, ttl: float | None = None, *, other_key: str
    ) -> tuple[bool, str | None]: ...
    async def touch(self, key: str, ttl: float | None, *, if_value: str | None = None) -> bool: ...
    async def delete(self, key: str, *, if_value: str | None = None) -> bool: ...
    async def delete_many(self, keys: Iterable[str]) -> int: ...
    async def set_guarded(
        self, key: str, value: str, ttl: float | None = None, *, guard_key: str, guard_value: str
    ) -> bool: ...
    async def delete_guarded(
        self, key: str, *, guard_key: str, guard_value: str, release: bool = False
    ) -> bool: ...


class AsyncTransactional(AsyncKeyValue, Protocol):
    """An asyncio store on a database: checkpoints may join a step's transaction."""

    @property
    def engine(self) -> AsyncEngine: ...
    async def set(
        self,
        key: str,
        value: str,
        ttl: float | None = None,
        *,
        connection: AsyncConnection | None = None,
    ) -> None: ...
    async def set_guarded(
        self,
        key: str,
        value: str,
        ttl: float | None = None,
        *,
        guard_key: str,
        guard_value: str,
        connection: AsyncConnection | None = None,
    ) -> bool: ...


class AsyncMemory:
    """A ``MemoryStore`` for an asyncio run: its calls, awaitable (they never block)."""

    def __init__(self, memory: MemoryStore) -> None:
        self.memory = memory

    async def get(self, key: str) -> str | None:
        return self.memory.get(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        return self.memory.get_many(keys)

    async def keys_with_prefix(self, prefix: str) -> list[str]:
        return self.memory.keys_with_prefix(prefix)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self.memory.set(key, value, ttl)

    async def add(self, key: str, value: str, ttl: float | None = None) -> bool:
        return self.memory.add(key, value, ttl)

    async def add_and_get(
        self, key: str, value: str, ttl: float | None = None, *, other_key: str
    ) -> tuple[bool, str | None]:
        return self.memory.add_and_get(key, value, ttl, other_key=other_key)

    async def touch(self, key: str, ttl: float | None, *, if_value: str | None = None) -> bool:
        return self.memory.touch(key, ttl, if_value=if_value)

    async def delete(self, key: str, *, if_value: str | None = None) -> bool:
        return self.memory.delete(key, if_value=if_value)

    async def delete_many(self, keys: Iterable[str]) -> int:
        return self.memory.delete_many(keys)

    async def set_guarded(
        self, key: str, value: str, ttl: float | None = None, *, guard_key: str, guard_value: str
    ) -> bool:
        return self.memory.set_guarded(
            key, value, ttl, guard_key=guard_key, guard_value=guard_value
        )

    async def delete_guarded(
        self, key: str, *, guard_key: str, guard_value: str, release: bool = False
    ) -> bool:
        return self.memory.delete_guarded(
            key, guard_key=guard_key, guard_value=guard_value, release=release
        )


if TYPE_CHECKING:  # mypy checks here that each store fits the protocol it is used through

    def _fits(
        sync: SQLAlchemyKeyValueStore, asyncio: AsyncSQLAlchemyKeyValueStore, memory: MemoryStore
    ) -> tuple[Transactional, KeyValue, AsyncTransactional, AsyncKeyValue]:
        return sync, memory, asyncio, AsyncMemory(memory)
