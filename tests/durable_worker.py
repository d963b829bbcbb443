"""A worker process for the crash and race tests: one durable run of a 20-step workflow.

Each step inserts one row into ``durable_effects`` (its side effect): plain
steps through their own autocommit connection, transactional steps through
the step's transaction. The worker prints ``started`` once it is about to
run (with ``--wait-for-go``, it then waits for a line on stdin, so racing
workers start their runs together however long each took to start up), then
one JSON line with the run's outcome.

    python tests/durable_worker.py URL TABLE WORKFLOW_ID [--async] [--tx N,M,...]
        [--steps 20] [--lease 0.5] [--first-step-sleep 0] [--step-sleep 0.002]
        [--wait-for-go]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    insert,
)

from sqlalchemy_awaitly import AsyncSQLAlchemyKeyValueStore, SQLAlchemyKeyValueStore, durable

effects = Table(
    "durable_effects",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow_id", Text, nullable=False),
    Column("step", Integer, nullable=False),
)


def sync_url(url: str) -> str:
    return url.replace("+aiosqlite", "")


def plain_effect(engine: Engine, workflow_id: str, step: int, sleep: float) -> Any:
    def fn() -> Any:
        with engine.begin() as conn:
            conn.execute(insert(effects).values(workflow_id=workflow_id, step=step))
        time.sleep(sleep)
        return step

    return fn


def tx_effect(workflow_id: str, step: int) -> Any:
    def fn(conn: Any) -> Any:
        conn.execute(insert(effects).values(workflow_id=workflow_id, step=step))
        return step

    return fn


def outcome(result: Any) -> dict[str, Any]:
    if result.ok:
        return {"ok": True}
    error = result.error
    return {
        "ok": False,
        "type": getattr(error, "type", None),
        "reason": getattr(error, "reason", None),
        "message": str(error),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("table")
    parser.add_argument("workflow_id")
    parser.add_argument("--async", dest="use_async", action="store_true")
    parser.add_argument("--tx", default="")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lease", type=float, default=0.5)
    parser.add_argument("--first-step-sleep", type=float, default=0.0)
    parser.add_argument("--step-sleep", type=float, default=0.002)
    parser.add_argument(
        "--wait-for-go", action="store_true", help="after 'started', wait for a line on stdin"
    )
    args = parser.parse_args()
    tx_steps = {int(s) for s in args.tx.split(",") if s}
    effects_engine = create_engine(sync_url(args.url))
    wid = args.workflow_id

    def sleep_for(i: int) -> float:
        return args.first_step_sleep if i == 0 else args.step_sleep

    options = {"id": wid, "lease_ttl": args.lease}
    if not args.use_async:
        store = SQLAlchemyKeyValueStore(args.url, table_name=args.table)
        store.setup()

        def workflow(step: Any, deps: Any) -> Any:
            for i in range(args.steps):
                if i in tx_steps:
                    step.transaction(tx_effect(wid, i), key=f"step-{i}")
                else:
                    step(plain_effect(effects_engine, wid, i, sleep_for(i)), key=f"step-{i}")
            return "done"

        print("started", flush=True)
        if args.wait_for_go:
            sys.stdin.readline()
        result = durable.run(None, workflow, store=store, **options)
        print(json.dumps(outcome(result)), flush=True)
        store.close()
    else:

        async def go() -> Any:
            store = AsyncSQLAlchemyKeyValueStore(args.url, table_name=args.table)
            await store.setup()

            async def workflow(step: Any, deps: Any) -> Any:
                for i in range(args.steps):
                    if i in tx_steps:
                        effect = tx_effect(wid, i)

                        async def in_tx(conn: Any, effect: Any = effect) -> Any:
                            return await conn.run_sync(effect)

                        await step.transaction(in_tx, key=f"step-{i}")
                    else:
                        fn = plain_effect(effects_engine, wid, i, sleep_for(i))
                        await step(lambda fn=fn: asyncio.to_thread(fn), key=f"step-{i}")
                return "done"

            print("started", flush=True)
            try:
                result = await durable.run_async(None, workflow, store=store, **options)
                print(json.dumps(outcome(result)), flush=True)
            finally:
                await store.close()

        asyncio.run(go())
    effects_engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
