"""Expiry comes from the database clock, whatever the session TimeZone or table type."""

from __future__ import annotations

import time

import pytest
from conftest import PostgresHandle, drop_table
from sqlalchemy import Engine, create_engine, text

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore

# UTC+14 and UTC-10: a writer and a reader 24 hours apart in wall-clock time.
EAST, WEST = "Pacific/Kiritimati", "America/Adak"


def _engine(url: str, zone: str) -> Engine:
    return create_engine(url, connect_args={"options": f"-c TimeZone={zone}"})


SEED_DDL = (
    "CREATE TABLE {t} (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at TIMESTAMP);"
    "CREATE INDEX idx_{t}_expires_at ON {t}(expires_at) WHERE expires_at IS NOT NULL"
)


@pytest.mark.parametrize("node_table", [False, True], ids=["timestamptz", "node-timestamp"])
def test_ttl_holds_across_session_time_zones(
    postgres: PostgresHandle, table_name: str, node_table: bool
) -> None:
    east, west = _engine(postgres.url, EAST), _engine(postgres.url, WEST)
    if node_table:
        with east.begin() as conn:
            for statement in SEED_DDL.format(t=table_name).split(";"):
                conn.execute(text(statement))
    writer = SQLAlchemyKeyValueStore(engine=east, table_name=table_name)
    reader = SQLAlchemyKeyValueStore(engine=west, table_name=table_name, create_table=False)
    writer.set("hour", "h", ttl=3600)
    writer.set("brief", "b", ttl=1)
    assert reader.get_many(["hour", "brief"]) == {"hour": "h", "brief": "b"}
    assert writer.get("hour") == "h"
    time.sleep(1.5)
    for store in (writer, reader):
        assert store.keys("*") == ["hour"]
        assert store.exists("brief") is False
    with create_engine(postgres.url).connect() as conn:
        kind = conn.execute(
            text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = :t AND column_name = 'expires_at'"
            ),
            {"t": table_name},
        ).scalar()
        # The hour-long TTL ends an hour from now, however the column stores it.
        utc_now = "now() AT TIME ZONE 'UTC'" if node_table else "now()"
        seconds_left = conn.execute(
            text(
                f"SELECT extract(epoch FROM expires_at - {utc_now}) "
                f"FROM {table_name} WHERE key = 'hour'"
            )
        ).scalar()
    assert kind == ("timestamp without time zone" if node_table else "timestamp with time zone")
    assert 3590 < float(seconds_left) <= 3600
    drop_table(east, table_name)
    east.dispose()
    west.dispose()


def test_ttl_ignores_the_client_clock_on_sqlite(sqlite_url: str) -> None:
    with SQLAlchemyKeyValueStore(sqlite_url) as store:
        store.set("k", "v", ttl=60)
        with store.engine.connect() as conn:
            left = conn.execute(
                text(
                    "SELECT (julianday(expires_at) - julianday('now')) * 86400 "
                    "FROM awaitly_workflow_state"
                )
            ).scalar()
        assert 55 < left <= 60
