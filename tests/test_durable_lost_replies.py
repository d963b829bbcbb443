"""A durable run whose store loses a reply after the server committed still ends right.

Through a proxy that drops the reply to the lease insert, the idempotency
claim, a transactional step's COMMIT or the final delete (with the lease
released in the same statement, or, under an idempotency key, before it): the
run returns ``Ok``, each step ran once, and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PostgresHandle, drop_table, raw_rows
from fault_proxy import FaultProxy
from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine, insert
from sqlalchemy.engine import make_url

from sqlalchemy_awaitly import AsyncSQLAlchemyKeyValueStore, SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import Ok

pytestmark = pytest.mark.postgres

effects = Table(
    "lost_reply_effects",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run", Text, nullable=False),
)


@pytest.fixture
def proxy(postgres: PostgresHandle) -> Iterator[FaultProxy]:
    url = make_url(postgres.url)
    with FaultProxy(url.host or "127.0.0.1", url.port or 5432) as p:
        yield p


@pytest.fixture
def effects_table(postgres: PostgresHandle) -> Iterator[None]:
    engine = create_engine(postgres.url)
    effects.create(engine, checkfirst=True)
    yield
    engine.dispose()


def _markers(run_id: str) -> dict[str, bytes]:
    return {
        "lease insert": f"workflow:lock:{run_id}".encode(),
        "idempotency claim": b"claimToken",
        # The whole Query message: "BEGIN ISOLATION LEVEL READ COMMITTED" holds "COMMIT" too.
        "transactional COMMIT": b"Q\x00\x00\x00\x0bCOMMIT\x00",
        "final delete": b"DELETE FROM",
        "final delete and release": b"DELETE FROM",
    }


WHERE = [
    "lease insert",
    "idempotency claim",
    "transactional COMMIT",
    "final delete",
    "final delete and release",
]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("where", WHERE)
def test_a_run_survives_a_lost_reply(
    where: str,
    flavour: str,
    postgres: PostgresHandle,
    proxy: FaultProxy,
    table_name: str,
    effects_table: None,
) -> None:
    run_id = f"lost-{uuid.uuid4().hex[:8]}"
    calls: list[str] = []

    def record(resource: Any) -> str:
        resource.execute(insert(effects).values(run=run_id))
        calls.append("tx")
        return "written"

    def plain() -> str:
        calls.append("plain")
        return "done"

    idempotent = where != "final delete and release"  # a key keeps the lease to the end
    options: dict[str, Any] = {"id": run_id}
    if idempotent:
        options["idempotency_key"] = f"idem-{run_id}"
    url = proxy.url_for(postgres.url)
    try:
        if flavour == "sync":
            store = SQLAlchemyKeyValueStore(url, table_name=table_name)
            store.setup()

            def workflow(step: Any, deps: Any) -> str:
                step.transaction(record, key="tx")
                return str(step(plain, key="plain"))

            proxy.drop_reply_after(_markers(run_id)[where])
            result = durable.run(None, workflow, store=store, **options)
            store.close()
        else:

            async def arecord(resource: Any) -> str:
                await resource.execute(insert(effects).values(run=run_id))
                calls.append("tx")
                return "written"

            async def scenario() -> Any:
                async with AsyncSQLAlchemyKeyValueStore(url, table_name=table_name) as store:
                    await store.setup()

                    async def workflow(step: Any, deps: Any) -> str:
                        await step.transaction(arecord, key="tx")
                        return str(await step(plain, key="plain"))

                    proxy.drop_reply_after(_markers(run_id)[where])
                    return await durable.run_async(None, workflow, store=store, **options)

            result = asyncio.run(scenario())
        assert proxy.faults_fired == 1, f"the reply to the {where} was never dropped"
        assert result == Ok("done"), result
        assert calls == ["tx", "plain"]
        counted = raw_rows(
            postgres.url, f"SELECT count(*) FROM {effects.name} WHERE run = '{run_id}'"
        )
        assert counted == [(1,)]
        # The run's state and its lease are gone; its idempotency record says completed.
        rows = raw_rows(postgres.url, f"SELECT key, value FROM {table_name}")
        if not idempotent:
            assert rows == []
            return
        assert [key for key, _ in rows] == [f"workflow:state:idem:idem-{run_id}"]
        assert '"completed"' in rows[0][1]
    finally:
        drop_table(create_engine(postgres.url), table_name)
