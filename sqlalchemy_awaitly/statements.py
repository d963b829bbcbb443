"""Every SQL statement the store runs, built once from the table with SQLAlchemy Core.

The sync and asyncio stores, and both ways of executing (the pool's driver
connection, or a caller's own Connection), all run these same statements.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    LargeBinary,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    collate,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Executable, Select


@dataclass(frozen=True, eq=False)
class Op:
    """One statement; ``returns_rows`` says whether to fetch rows or a row count.

    ``repeatable``: after a connection broke with the statement sent, running
    it again gives the same state and a true answer (reads, upserts, writes
    conditional on an owner token). The others (``add``, the deletes) would
    answer about the repeat, not the first run: for them a lost reply raises
    ``OutcomeUnknownError``. See docs/errors.md.
    """

    name: str
    statement: Executable
    returns_rows: bool
    repeatable: bool
    before: tuple[Op, ...] = ()
    """Statements run ahead of this one, in the same message where the driver takes
    several (psycopg, psycopg2), else each in turn; only this one's rows are read."""


class Statements:
    """The statements for one table on one dialect (``postgresql`` or ``sqlite``).

    ``naive_utc_expiry`` is for tables made by the Node.js adapter, whose
    ``expires_at`` is ``timestamp without time zone``: expiry is then written
    and compared as UTC wall-clock time, so neither the client's time zone nor
    the session ``TimeZone`` can shift it.
    """

    def __init__(self, table: Table, dialect_name: str, naive_utc_expiry: bool = False) -> None:
        if dialect_name not in ("postgresql", "sqlite"):
            raise NotImplementedError(
                f"the {dialect_name!r} dialect is not supported; use PostgreSQL or SQLite"
            )
        self.table = table
        self.dialect_name = dialect_name
        self.is_postgresql = dialect_name == "postgresql"
        t = table.c
        ttl = bindparam("ttl", type_=Float)
        if self.is_postgresql:
            now: ColumnElement[Any] = func.statement_timestamp()
            if naive_utc_expiry:
                now = func.timezone(literal_column("'UTC'"), now)
            expiry: ColumnElement[Any] = now + cast(ttl, Float) * literal_column(
                "INTERVAL '1 second'"
            )
            key_c: ColumnElement[str] = collate(t.key, "C")
        else:
            fmt: ColumnElement[str] = literal_column("'%Y-%m-%d %H:%M:%f'")
            now = func.strftime(fmt, literal_column("'now'"))
            expiry = func.strftime(
                fmt, func.julianday(literal_column("'now'")) + ttl / literal_column("86400.0")
            )
            key_c = t.key
        live = or_(t.expires_at.is_(None), t.expires_at > now)
        # Whether a deleted row was live. Not ``live`` itself: SQLite 3.40
        # evaluates ``expires_at IS NULL`` as false in a DELETE's RETURNING
        # clause when a partial index covers the column.
        was_live = func.coalesce(t.expires_at > now, true()).label("live")

        # What reads hand back. SQLite keeps whatever bytes it was given in a
        # TEXT column (a BLOB, or text that is not UTF-8, from other writers or from
        # an earlier set_many), and the driver raises on the whole result
        # if one such row is in it; as bytes, ``calls.text_of`` decodes each
        # one, so one damaged row cannot fail a listing.
        value_out: ColumnElement[Any] = t.value
        key_out: ColumnElement[Any] = t.key
        if not self.is_postgresql:
            value_out = cast(t.value, LargeBinary).label("value")
            key_out = cast(t.key, LargeBinary).label("key")

        key = bindparam("key", type_=Text)
        self.get = Op("get", select(value_out).where(t.key == key, live), True, repeatable=True)
        self.exists = Op(
            "exists", select(literal_column("1")).where(t.key == key, live), True, repeatable=True
        )
        self.set = Op("set", self._upsert_one(key, expiry), False, repeatable=True)
        self.delete = Op(
            "delete", delete(table).where(t.key == key).returning(was_live), True, repeatable=False
        )
        # Conditional writes, the building blocks of leases: insert unless a
        # live row holds the key; extend or remove a live row only while it
        # still holds the caller's value (its owner token).
        value = bindparam("value", type_=Text)
        expired = t.expires_at.is_not(None) & (t.expires_at <= now)
        self.add = Op(
            "add", self._upsert_one(key, expiry, only_over=expired), True, repeatable=False
        )
        # An UPDATE may not name its parameters after columns.
        match_key = bindparam("match_key", type_=Text)
        match_value = bindparam("match_value", type_=Text)
        self.touch = Op(
            "touch",
            update(table).where(t.key == match_key, live).values(expires_at=expiry),
            False,
            repeatable=True,
        )
        self.touch_if = Op(
            "touch_if",
            update(table)
            .where(t.key == match_key, t.value == match_value, live)
            .values(expires_at=expiry),
            False,
            repeatable=True,
        )
        self.delete_if = Op(
            "delete_if",
            delete(table).where(t.key == key, t.value == value).returning(was_live),
            True,
            repeatable=False,
        )
        # Fenced writes: only while another row (a lease) still holds its
        # owner's value, checked in the same statement. On PostgreSQL the lease
        # row is share-locked until the write commits, so it cannot change hands
        # in between; SQLite runs one writer at a time anyway.
        lease = table.alias("lease")
        lease_holds = (
            lease.c.key == bindparam("guard_key", type_=Text),
            lease.c.value == bindparam("guard_value", type_=Text),
            or_(lease.c.expires_at.is_(None), lease.c.expires_at > now),
        )
        holding: Select[Any] = select(literal_column("1")).where(*lease_holds)
        # A checkpoint selects its row from the lease row itself: one row while the
        # lease holds, none otherwise. PostgreSQL plans and runs that in about 15 us
        # less than the same test as an EXISTS subquery (the write's ~300 us).
        guarded_rows = select(key, value, expiry).select_from(lease).where(*lease_holds)
        if self.is_postgresql:
            holding = holding.with_for_update(read=True)
            guarded_rows = guarded_rows.with_for_update(read=True)
        held = holding.exists()
        self.set_guarded = Op(
            "set_guarded",
            self._on_conflict_update(
                self._insert().from_select(["key", "value", "expires_at"], guarded_rows)
            ).returning(t.key),
            True,
            repeatable=True,
        )
        self.delete_guarded = Op(
            "delete_guarded",
            delete(table).where(t.key == key, held).returning(literal_column("1")),
            True,
            repeatable=False,
        )
        # The row and its guard together, so a run ends in one statement: both
        # go while the guard holds, neither otherwise (a row per deleted row).
        both = t.key.in_([key, bindparam("guard_key", type_=Text)])
        self.delete_guarded_release = Op(
            "delete_guarded_release",
            delete(table).where(both, held).returning(literal_column("1")),
            True,
            repeatable=False,
        )

        many = self._key_in_keys()
        self.get_many = Op(
            "get_many", select(key_out, value_out).where(many, live), True, repeatable=True
        )
        # Batches lock their rows in key order, inserts and deletes alike, so two
        # batches over the same keys wait for each other instead of deadlocking.
        if self.is_postgresql:
            in_order = select(t.key).where(many).order_by(key_c).with_for_update()
            many = t.key.in_(in_order.scalar_subquery())
        self.delete_many = Op(
            "delete_many",
            delete(table).where(many).returning(was_live),
            True,
            repeatable=False,
        )
        self.set_many = Op("set_many", self._upsert_many(expiry), False, repeatable=True)

        match = bindparam("match", type_=Text)
        matches = key_c.like(match, escape="\\") if self.is_postgresql else t.key.op("GLOB")(match)
        lower = key_c >= bindparam("lower", type_=Text)
        upper = key_c < bindparam("upper", type_=Text)
        scan = select(key_out).order_by(key_c)
        self.scan_exact = Op("scan_exact", scan.where(t.key == key, live), True, repeatable=True)
        self.scan_range = Op("scan_range", scan.where(lower, upper, live), True, repeatable=True)
        self.scan_from = Op("scan_from", scan.where(lower, live), True, repeatable=True)
        self.scan_range_match = Op(
            "scan_range_match",
            scan.where(lower, upper, matches, live),
            True,
            repeatable=True,
        )
        self.scan_from_match = Op(
            "scan_from_match", scan.where(lower, matches, live), True, repeatable=True
        )

        # A lease taken and the row it guards read, in one round trip (a run's start).
        # The read is a statement of its own, so it sees what a lease holder wrote
        # before the lease came free. It reads the lease row too: whether it holds
        # the caller's token is the answer, so the pair may run again after a lost
        # reply (the add alone may not).
        self.add_and_get = Op(
            "add_and_get",
            select(key_out, value_out).where(
                t.key.in_([key, bindparam("other_key", type_=Text)]), live
            ),
            True,
            repeatable=True,
            before=(replace(self.add, name="add_and_get", repeatable=True),),
        )

        self.purge_batch = Op("purge_batch", self._purge_batch(expired), False, repeatable=False)
        self.count = Op(
            "count",
            select(func.count(), func.count().filter(expired)).select_from(table),
            True,
            repeatable=True,
        )
        self.sizes = Op("sizes", self._sizes(), True, repeatable=True)
        self.by_name: dict[str, Op] = {op.name: op for op in self.all_ops()}

    def _purge_batch(self, expired: ColumnElement[bool]) -> Executable:
        """Delete up to ``batch_size`` expired rows.

        On PostgreSQL the batch is found through the partial index and deleted by
        ``ctid`` (no primary-key lookup per row); rows another transaction is
        rewriting are the next purge's (``SKIP LOCKED``: a purge never waits).
        Its commit does not wait for the WAL flush (``synchronous_commit`` off
        for this statement's transaction only, an InitPlan run once): a batch a
        crash loses is rows that were expired, invisible to every read, and
        purged again next time. Together about 2.5x the rows a second of
        ``key IN (...)`` with a flushed commit.
        """
        t = self.table.c
        limit = bindparam("batch_size", type_=Integer)
        if not self.is_postgresql:
            return delete(self.table).where(t.key.in_(select(t.key).where(expired).limit(limit)))
        ctid: ColumnElement[Any] = literal_column("ctid")
        no_flush = select(
            func.set_config(literal_column("'synchronous_commit'"), literal_column("'off'"), true())
        ).scalar_subquery()
        batch = (
            select(ctid)
            .select_from(self.table)
            .where(expired, no_flush.is_not(None))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return delete(self.table).where(ctid == any_(func.array(batch.scalar_subquery())))

    def _sizes(self) -> Executable:
        if self.is_postgresql:
            rel = cast(bindparam("relation", type_=Text), postgresql.REGCLASS)
            return select(
                func.pg_total_relation_size(rel),
                func.pg_relation_size(rel),
                func.pg_indexes_size(rel),
            )
        return select(
            literal_column("page_count * page_size"), literal_column("NULL"), literal_column("NULL")
        ).select_from(text("pragma_page_count(), pragma_page_size()"))

    def all_ops(self) -> list[Op]:
        return [v for v in vars(self).values() if isinstance(v, Op)]

    def op(self, name: str) -> Op:
        return self.by_name[name]

    def _insert(self) -> Any:
        return postgresql.insert(self.table) if self.is_postgresql else sqlite.insert(self.table)

    def _upsert_one(
        self,
        key: ColumnElement[str],
        expiry: ColumnElement[Any],
        only_over: ColumnElement[bool] | None = None,
    ) -> Executable:
        """Upsert one row; with ``only_over``, replace an existing row only where it holds."""
        stmt = self._insert().values(
            key=key, value=bindparam("value", type_=Text), expires_at=expiry
        )
        if only_over is None:
            upsert: Executable = self._on_conflict_update(stmt)
            return upsert
        conditional: Executable = self._on_conflict_update(stmt, where=only_over).returning(
            self.table.c.key
        )
        return conditional

    def _upsert_many(self, expiry: ColumnElement[Any]) -> Executable:
        if self.is_postgresql:
            rows = (
                func.unnest(
                    cast(bindparam("keys"), postgresql.ARRAY(Text)),
                    cast(bindparam("values"), postgresql.ARRAY(Text)),
                )
                .table_valued("k", "v")
                .render_derived()
            )
            source = select(rows.c.k, rows.c.v, expiry).order_by(collate(rows.c.k, "C"))
        else:
            rows = func.json_each(bindparam("items", type_=Text)).table_valued("value")
            source = select(
                func.json_extract(rows.c.value, literal_column("'$[0]'")),
                func.json_extract(rows.c.value, literal_column("'$[1]'")),
                expiry,
            ).where(true())  # SQLite needs a WHERE to parse INSERT ... SELECT ... ON CONFLICT
        stmt = self._insert().from_select(["key", "value", "expires_at"], source)
        upsert: Executable = self._on_conflict_update(stmt)
        return upsert

    def _on_conflict_update(self, stmt: Any, where: ColumnElement[bool] | None = None) -> Any:
        excluded = stmt.excluded
        upsert = stmt.on_conflict_do_update(
            index_elements=[self.table.c.key],
            set_={"value": excluded.value, "expires_at": excluded.expires_at},
            where=where,
        )
        return upsert

    def _key_in_keys(self) -> ColumnElement[bool]:
        """``key`` is one of the ``keys`` parameter: one statement text for any count."""
        key = self.table.c.key
        if self.is_postgresql:
            return key == any_(cast(bindparam("keys"), postgresql.ARRAY(Text)))
        each = func.json_each(bindparam("keys", type_=Text)).table_valued("value")
        return key.in_(select(each.c.value))
