"""A ``connection=`` of the other kind (sync or asyncio) is a TypeError before anything runs.

Before, an ``AsyncSession`` given to the sync store failed with an
AttributeError deep in SQLAlchemy, and a sync ``Session`` given to the
asyncio store raised only after its write had run, which the caller's
commit then kept.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqlalchemy_awaitly import AsyncSQLAlchemyKeyValueStore, SQLAlchemyKeyValueStore


def test_the_sync_store_refuses_asyncio_connections(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = SQLAlchemyKeyValueStore(url)
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")

    async def attempt() -> None:
        async with AsyncSession(async_engine) as session:
            with pytest.raises(TypeError, match=r"AsyncSession.*AsyncSQLAlchemyKeyValueStore"):
                store.set("k", "v", connection=session)  # type: ignore[arg-type]
            await session.commit()
        async with async_engine.connect() as conn:
            with pytest.raises(TypeError, match="AsyncConnection"):
                store.set("k", "v", connection=conn)  # type: ignore[arg-type]
            await conn.commit()
        await async_engine.dispose()

    try:
        asyncio.run(attempt())
        assert store.get("k") is None
    finally:
        store.close()


def test_the_asyncio_store_refuses_sync_connections_before_writing(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")

    async def attempt() -> None:
        store = AsyncSQLAlchemyKeyValueStore(f"sqlite:///{tmp_path / 'state.db'}")
        try:
            with Session(engine) as session:
                with pytest.raises(TypeError, match=r"Session.*SQLAlchemyKeyValueStore"):
                    await store.set("k", "v", connection=session)  # type: ignore[arg-type]
                session.commit()  # what the caller does next: nothing of ours is in it
            with engine.connect() as conn:
                with pytest.raises(TypeError, match="Connection"):
                    await store.set("k", "v", connection=conn)  # type: ignore[arg-type]
                conn.commit()
            assert await store.get("k") is None
        finally:
            await store.close()

    try:
        asyncio.run(attempt())
    finally:
        engine.dispose()
