"""Self-test of tests/fault_proxy.py: against a real PostgreSQL, and a scripted fake server."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlalchemy
import sqlalchemy.exc
from conftest import PostgresHandle
from fault_proxy import FaultProxy
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url


def conninfo(url: str) -> str:
    """A libpq conninfo for a SQLAlchemy PostgreSQL URL."""
    u = make_url(url)
    parts = {"host": u.host, "port": u.port, "user": u.username, "password": u.password}
    parts |= {"dbname": u.database, "connect_timeout": 5}
    return make_conninfo("", **{k: v for k, v in parts.items() if v is not None})


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def proxy(postgres: PostgresHandle) -> Iterator[FaultProxy]:
    url = make_url(postgres.url)
    with FaultProxy(url.host or "127.0.0.1", url.port or 5432) as p:
        yield p
    assert p.connections == 0


@pytest.fixture
def direct(postgres: PostgresHandle) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(conninfo(postgres.url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def table(direct: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    name = f"fp_{uuid.uuid4().hex[:12]}"
    direct.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, note text)")
    yield name
    direct.execute(f"DROP TABLE IF EXISTS {name}")


def ids(conn: psycopg.Connection[tuple[object, ...]], table: str) -> list[object]:
    return [row[0] for row in conn.execute(f"SELECT id FROM {table} ORDER BY id")]


def connect(proxy: FaultProxy, postgres: PostgresHandle) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(conninfo(proxy.url_for(postgres.url)), autocommit=True)


def test_url_for_replaces_host_and_port_only() -> None:
    with FaultProxy("127.0.0.1", 1) as p:
        got = p.url_for("postgresql+psycopg://u:s%40cret@db.example:5432/app?sslmode=disable")
    assert got == f"postgresql+psycopg://u:s%40cret@127.0.0.1:{p.port}/app?sslmode=disable"


@pytest.mark.postgres
def test_queries_pass_through(proxy: FaultProxy, postgres: PostgresHandle) -> None:
    with connect(proxy, postgres) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)  # simple protocol
        assert conn.execute("SELECT %s::int + 1", [41]).fetchone() == (42,)  # extended
        big = conn.execute("SELECT repeat('x', 300000)").fetchone()  # many recv() chunks
        assert big is not None and len(str(big[0])) == 300000
        rows = conn.execute("SELECT g FROM generate_series(1, 20000) g").fetchall()
        assert len(rows) == 20000
        assert proxy.connections == 1
    wait_for(lambda: proxy.connections == 0)
    assert proxy.faults_fired == 0


@pytest.mark.postgres
@pytest.mark.parametrize("extended", [False, True], ids=["simple", "extended"])
def test_insert_commits_but_reply_is_lost(
    proxy: FaultProxy,
    postgres: PostgresHandle,
    direct: psycopg.Connection[tuple[object, ...]],
    table: str,
    extended: bool,
) -> None:
    with connect(proxy, postgres) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1, 'before')")
        proxy.drop_reply_after(b"INSERT INTO")
        assert proxy.armed == 1
        with pytest.raises(psycopg.OperationalError):
            if extended:
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", [2, "lost reply"])
            else:
                conn.execute(f"INSERT INTO {table} VALUES (2, 'lost reply')")
        assert conn.closed or conn.broken
    assert proxy.faults_fired == 1 and proxy.armed == 0
    assert ids(direct, table) == [1, 2]
    wait_for(lambda: proxy.connections == 0)
    with connect(proxy, postgres) as conn:  # disarmed after one firing
        conn.execute(f"INSERT INTO {table} VALUES (3, 'fine')")
    assert ids(direct, table) == [1, 2, 3]


@pytest.mark.postgres
def test_marker_far_into_a_large_statement(
    proxy: FaultProxy,
    postgres: PostgresHandle,
    direct: psycopg.Connection[tuple[object, ...]],
    table: str,
) -> None:
    """The statement spans many recv() chunks; the marker sits in a later one."""
    with connect(proxy, postgres) as conn:
        proxy.drop_reply_after(b"needle-in-the-tail")
        note = "x" * 500_000 + "needle-in-the-tail"
        with pytest.raises(psycopg.OperationalError):
            conn.execute(f"INSERT INTO {table} VALUES (1, '{note}')")
    assert proxy.faults_fired == 1
    assert ids(direct, table) == [1]


@pytest.mark.postgres
def test_commit_reply_is_lost(
    proxy: FaultProxy,
    postgres: PostgresHandle,
    direct: psycopg.Connection[tuple[object, ...]],
    table: str,
) -> None:
    with psycopg.connect(conninfo(proxy.url_for(postgres.url))) as conn:  # not autocommit
        conn.execute(f"INSERT INTO {table} VALUES (%s, 'in txn')", [7])
        assert ids(direct, table) == []
        proxy.drop_reply_after(b"COMMIT")
        with pytest.raises(psycopg.OperationalError):
            conn.commit()
    assert proxy.faults_fired == 1
    assert ids(direct, table) == [7]


@pytest.mark.postgres
def test_drop_connections_cuts_live_connections(
    proxy: FaultProxy, postgres: PostgresHandle
) -> None:
    with connect(proxy, postgres) as first, connect(proxy, postgres) as second:
        assert proxy.connections == 2
        assert proxy.drop_connections() == 2
        assert proxy.connections == 0
        for conn in (first, second):
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
    with connect(proxy, postgres) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert proxy.faults_fired == 0


@pytest.mark.postgres
def test_refuse(proxy: FaultProxy, postgres: PostgresHandle) -> None:
    proxy.refuse(True)
    with pytest.raises(psycopg.OperationalError):
        connect(proxy, postgres)
    assert proxy.accepted >= 1 and proxy.connections == 0
    proxy.refuse(False)
    with connect(proxy, postgres) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)


@pytest.mark.postgres
def test_close_resets_live_connections(postgres: PostgresHandle) -> None:
    url = make_url(postgres.url)
    before = set(threading.enumerate())
    p = FaultProxy(url.host or "127.0.0.1", url.port or 5432).start()
    conn = connect(p, postgres)
    try:
        ours = set(threading.enumerate()) - before
        assert len(ours) == 2  # the acceptor and the connection's thread
        p.close()
        assert p.connections == 0
        assert not any(t.is_alive() for t in ours)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    with pytest.raises(psycopg.OperationalError):
        connect(p, postgres)


@pytest.mark.postgres
def test_through_a_sqlalchemy_engine(
    proxy: FaultProxy,
    postgres: PostgresHandle,
    direct: psycopg.Connection[tuple[object, ...]],
    table: str,
) -> None:
    engine = sqlalchemy.create_engine(proxy.url_for(postgres.url))
    try:
        proxy.drop_reply_after(b"COMMIT")
        with pytest.raises(sqlalchemy.exc.OperationalError), engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"INSERT INTO {table} VALUES (:id, 'sa')"), {"id": 5})
        assert proxy.faults_fired == 1
        assert ids(direct, table) == [5]
        with engine.connect() as conn:  # the pool replaced the broken connection
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


# --- a scripted fake server: exact control over framing and pipelining -------------


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


READY = message(b"Z", b"I")
STARTUP = struct.pack("!ii", 8 + 5, 196608) + b"x\x00y\x00\x00"
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything until the peer closes; and whether it closed with a reset."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return data, True
    return data, False


@contextlib.contextmanager
def fake_server(
    script: Callable[[socket.socket], None],
) -> Iterator[tuple[FaultProxy, socket.socket]]:
    """A one-connection server running ``script``; yields the proxy and a client socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                script(conn)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with FaultProxy("127.0.0.1", listener.getsockname()[1]) as p:
            client = socket.create_connection(("127.0.0.1", p.port), timeout=5)
            with client:
                yield p, client
        thread.join(5)
        assert not thread.is_alive()
        if errors:
            raise errors[0]
    finally:
        listener.close()


def trickle(sock: socket.socket, data: bytes) -> None:
    """Send byte by byte, pausing, so the proxy's recv() sees split messages."""
    for i in range(len(data)):
        sock.sendall(data[i : i + 1])
        time.sleep(0.002)


def test_pipelined_replies_before_the_marked_one_are_forwarded() -> None:
    requests = message(b"Q", b"SELECT 1\x00") + message(b"Q", b"INSERT INTO t\x00")
    first = message(b"T", b"\x00\x00") + message(b"C", b"SELECT 1\x00") + READY
    second = message(b"C", b"INSERT 0 1\x00") + READY
    seen: list[bytes] = []

    def script(conn: socket.socket) -> None:
        assert recv_exactly(conn, 8) == SSL_REQUEST
        conn.sendall(b"N")
        assert recv_exactly(conn, len(STARTUP)) == STARTUP
        conn.sendall(message(b"R", b"\x00" * 4) + message(b"N", b"notice\x00") + READY)
        seen.append(recv_exactly(conn, len(requests)))
        trickle(conn, first + second)
        recv_all(conn)

    with fake_server(script) as (p, client):
        client.sendall(SSL_REQUEST)
        assert recv_exactly(client, 1) == b"N"
        client.sendall(STARTUP)
        greeting = message(b"R", b"\x00" * 4) + message(b"N", b"notice\x00") + READY
        assert recv_exactly(client, len(greeting)) == greeting
        p.drop_reply_after(b"INSERT INTO")
        client.sendall(requests)
        data, _reset = recv_all(client)
        assert data == first  # the reply to SELECT arrives, the INSERT's is dropped
        assert p.faults_fired == 1
    assert seen == [requests]


def test_marker_split_across_chunks_and_reply_split_across_reads() -> None:
    query = message(b"Q", b"DELETE FROM t\x00")
    reply = message(b"C", b"DELETE 1\x00") + READY

    def script(conn: socket.socket) -> None:
        assert recv_exactly(conn, len(STARTUP)) == STARTUP
        conn.sendall(READY)
        assert recv_exactly(conn, len(query)) == query
        trickle(conn, reply)
        recv_all(conn)

    with fake_server(script) as (p, client):
        client.sendall(STARTUP)
        assert recv_exactly(client, len(READY)) == READY
        p.drop_reply_after(b"DELETE FROM")
        client.sendall(query[:9])  # type, length, "DEL"
        time.sleep(0.05)
        client.sendall(query[9:])
        data, _reset = recv_all(client)
        assert data == b""
        assert p.faults_fired == 1


def test_server_hanging_up_before_replying_still_fires() -> None:
    query = message(b"Q", b"COMMIT\x00")

    def script(conn: socket.socket) -> None:
        assert recv_exactly(conn, len(STARTUP)) == STARTUP
        conn.sendall(READY)
        recv_exactly(conn, len(query))

    with fake_server(script) as (p, client):
        client.sendall(STARTUP)
        assert recv_exactly(client, len(READY)) == READY
        p.drop_reply_after(b"COMMIT")
        client.sendall(query)
        assert recv_all(client)[0] == b""
        assert p.faults_fired == 1


def test_startup_packet_never_matches() -> None:
    def script(conn: socket.socket) -> None:
        assert recv_exactly(conn, len(STARTUP)) == STARTUP
        conn.sendall(READY)
        recv_all(conn)

    with fake_server(script) as (p, client):
        p.drop_reply_after(b"x\x00y")  # inside the startup packet
        client.sendall(STARTUP)
        assert recv_exactly(client, len(READY)) == READY
        assert p.faults_fired == 0 and p.armed == 1
