"""A TCP proxy in front of PostgreSQL that injects network faults for tests.

The fault that matters most: *the server committed but the reply was lost*.
:meth:`FaultProxy.drop_reply_after` lets a statement reach the server, waits for
the server's complete reply (up to its ReadyForQuery), drops that reply and
resets both sides of the connection, so the client sees a dropped connection
while the server has done the work.

One thread accepts; each proxied connection is served by one thread that owns
both of its sockets (a selector over client, server and a wake-up socketpair),
so no socket is ever closed under another thread's feet. Everything is stdlib.

Both byte streams are followed in PostgreSQL message framing (1 type byte +
big-endian int32 length including itself; the untyped startup packets and the
single-byte answers to SSLRequest/GSSENCRequest are handled). That tells which
ReadyForQuery answers the request carrying the marker, even in pipeline mode or
when a message is split across ``recv()`` calls. A connection that negotiates
TLS/GSS encryption is passed through untouched: its markers cannot be seen.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from types import TracebackType

from sqlalchemy.engine import make_url

__all__ = ["FaultProxy"]

_CHUNK = 65536
_MAX_MARKER = 1024  # the client->server tail kept between chunks for matching
_FAULT_TIMEOUT = 10.0  # longest wait for the reply to drop
_JOIN_TIMEOUT = 5.0  # longest wait for threads in drop_connections()/close()
_CONNECT_TIMEOUT = 5.0
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends an RST

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_MAX_STARTUP = 1 << 20  # PostgreSQL caps startup packets at 10000 bytes
_REPLY_TRIGGERS = frozenset(b"QSF")  # Query, Sync, FunctionCall: each ends in a ReadyForQuery
_READY_FOR_QUERY = ord("Z")


def _reset(sock: socket.socket) -> None:
    """Close abruptly: RST instead of FIN; never raises."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


def _graceful(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class _ServerStream:
    """Follows server->client bytes; reports where each ReadyForQuery ends."""

    def __init__(self) -> None:
        self.opaque = False  # encryption was negotiated: bytes are no longer parsed
        self.expect_raw = 0  # single-byte answers owed to SSLRequest/GSSENCRequest
        self._head = bytearray()
        self._type = 0
        self._length = 0
        self._skip = 0

    def feed(self, data: bytes) -> list[int]:
        """Return, for each ReadyForQuery completed in ``data``, the offset just after it."""
        ends: list[int] = []
        i, n = 0, len(data)
        while i < n and not self.opaque:
            if self._skip:
                step = min(self._skip, n - i)
                i += step
                self._skip -= step
                if not self._skip:
                    self._complete(i, ends)
                continue
            if not self._head and self.expect_raw:
                self.expect_raw -= 1
                if data[i] == ord("N"):  # "no encryption": framing goes on in the clear
                    i += 1
                    continue
                if data[i] in b"SG":  # TLS/GSS from now on
                    self.opaque = True
                    break
                self.expect_raw = 0  # e.g. an ErrorResponse: a framed message after all
            take = data[i : i + 5 - len(self._head)]
            self._head += take
            i += len(take)
            if len(self._head) < 5:
                break
            self._type = self._head[0]
            (self._length,) = struct.unpack("!i", self._head[1:5])
            self._head.clear()
            if self._length < 4:
                self.opaque = True  # not PostgreSQL framing: stop interpreting
                break
            self._skip = self._length - 4
            if not self._skip:
                self._complete(i, ends)
        return ends

    def _complete(self, end: int, ends: list[int]) -> None:
        if self._type == _READY_FOR_QUERY and self._length == 5:
            ends.append(end)


class _ClientStream:
    """Follows client->server bytes; reports where each message ends that the server
    answers with exactly one ReadyForQuery: StartupMessage, Query, Sync, FunctionCall."""

    def __init__(self, server: _ServerStream) -> None:
        self.server = server
        self.typed = False  # past the StartupMessage: typed messages from here on
        self.opaque = False
        self._head = bytearray()
        self._type = 0
        self._skip = 0
        self._startup = False

    def feed(self, data: bytes) -> list[int]:
        """Return, for each reply-triggering message completed in ``data``, its end offset.

        Must run before ``data`` is forwarded: an SSLRequest seen here tells the
        server stream to expect its single-byte answer.
        """
        ends: list[int] = []
        i, n = 0, len(data)
        while i < n and not self.opaque:
            if self._skip:
                step = min(self._skip, n - i)
                i += step
                self._skip -= step
                if not self._skip:
                    self._complete(i, ends)
                continue
            size = 5 if self.typed else 8
            take = data[i : i + size - len(self._head)]
            self._head += take
            i += len(take)
            if len(self._head) < size:
                break
            if self.typed:
                self._type = self._head[0]
                (length,) = struct.unpack("!i", self._head[1:5])
                body = length - 4
            else:
                length, code = struct.unpack("!ii", self._head)
                body = length - 8
                if not 8 <= length <= _MAX_STARTUP:
                    body = -1
                elif code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self.server.expect_raw += 1
                elif code >> 16 == 3:  # StartupMessage, protocol 3.x
                    self._startup = True
                elif code >> 16 != 1234:  # not a CancelRequest either
                    body = -1
            self._head.clear()
            if body < 0:
                self.opaque = True
                break
            self._skip = body
            if not body:
                self._complete(i, ends)
        return ends

    def _complete(self, end: int, ends: list[int]) -> None:
        if self.typed:
            if self._type in _REPLY_TRIGGERS:
                ends.append(end)
        elif self._startup:  # answered by the greeting's ReadyForQuery (or an error)
            self.typed = True
            ends.append(end)


class _Pair:
    """One proxied connection: a client socket, a server socket, one thread."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self._wake_r, self._wake_w = socket.socketpair()
        self._server_stream = _ServerStream()
        self._client_stream = _ClientStream(self._server_stream)
        self._tail = b""
        self._requests = 0  # Query/Sync/FunctionCall messages the client has sent
        self._replies = 0  # ReadyForQuery messages the server has sent
        self._target: int | None = None  # number of the ReadyForQuery to drop
        self._deadline = 0.0
        self._stop = False
        self._abrupt = False
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fault-proxy-conn", daemon=True)

    def cut(self) -> None:
        """Ask the thread to reset both sides; callable from any thread."""
        self._abrupt = True
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self.client, selectors.EVENT_READ, "client")
            sel.register(self.server, selectors.EVENT_READ, "server")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not self._stop:
                timeout = 1.0
                if self._target is not None:
                    timeout = self._deadline - time.monotonic()
                    if timeout <= 0:
                        self._fire()  # no reply in time: cut anyway
                        break
                for key, _ in sel.select(timeout):
                    if self._stop:
                        break
                    if key.data == "client":
                        self._from_client()
                    elif key.data == "server":
                        self._from_server()
        except OSError:
            self._abrupt = True
        finally:
            sel.close()
            close = _reset if self._abrupt else _graceful
            close(self.client)
            close(self.server)
            self._wake_r.close()
            self._wake_w.close()
            self.proxy._forget(self)
            self.finished.set()

    def _from_client(self) -> None:
        data = self.client.recv(_CHUNK)
        if not data:
            self._stop = True  # client hung up: pass the close on gracefully
            return
        was_typed = self._client_stream.typed
        ends = self._client_stream.feed(data)
        if was_typed and self._target is None and not self._client_stream.opaque:
            hay = self._tail + data
            pos = self.proxy._match(hay, len(self._tail))
            if pos is not None:
                marker_at = pos - len(self._tail)  # may be < 0: began in the previous chunk
                before = self._requests + sum(1 for end in ends if end <= marker_at)
                self._target = before + 1  # the reply to the request carrying the marker
                self._deadline = time.monotonic() + self.proxy._fault_timeout
            self._tail = hay[-_MAX_MARKER:]
        self._requests += len(ends)
        self.server.sendall(data)

    def _from_server(self) -> None:
        data = self.server.recv(_CHUNK)
        if not data:
            if self._target is not None:
                self._fire()  # the server hung up before replying: still a lost reply
            self._stop = True
            return
        ends = self._server_stream.feed(data)
        target = self._target
        if target is None:
            self._replies += len(ends)
            self.client.sendall(data)
            return
        # Forward the replies to earlier requests (pipelining); withhold the rest.
        owed = target - 1 - self._replies
        forward = 0 if owed <= 0 else (ends[owed - 1] if len(ends) >= owed else len(data))
        if forward:
            self.client.sendall(data[:forward])
        self._replies += len(ends)
        if self._replies >= target or self._server_stream.opaque:
            self._fire()

    def _fire(self) -> None:
        self.proxy._fault_done()
        self._target = None
        self._abrupt = True
        self._stop = True


class _Fault:
    def __init__(self, marker: bytes, count: int) -> None:
        self.marker = marker
        self.remaining = count


class FaultProxy:
    """Forward 127.0.0.1:``port`` to ``(target_host, target_port)``, injecting faults.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self, target_host: str, target_port: int, *, fault_timeout: float = _FAULT_TIMEOUT
    ) -> None:
        self.target = (target_host, target_port)
        self._fault_timeout = fault_timeout
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._pairs: set[_Pair] = set()
        self._refusing = False
        self._closed = False
        self._faults_fired = 0
        self._accepted = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start listening and forwarding; returns self. Idempotent."""
        with self._lock:
            if self._closed:
                raise RuntimeError("FaultProxy is closed")
            if self._acceptor is not None:
                return self
            self._listener.listen(64)
            self._acceptor = threading.Thread(
                target=self._accept_loop, name="fault-proxy-accept", daemon=True
            )
            self._acceptor.start()
        return self

    def close(self) -> None:
        """Stop listening, reset every live connection, join all threads (bounded)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            acceptor = self._acceptor
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if acceptor is not None:
            acceptor.join(_JOIN_TIMEOUT)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        self.drop_connections()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- addressing ------------------------------------------------------------

    def url_for(self, url: str) -> str:
        """``url`` (a SQLAlchemy URL) with host and port pointing at this proxy."""
        proxied = make_url(url).set(host="127.0.0.1", port=self.port)
        return proxied.render_as_string(hide_password=False)

    # -- faults ----------------------------------------------------------------

    def drop_reply_after(self, marker: bytes, count: int = 1) -> None:
        """Arm: the next ``count`` client->server chunks containing ``marker`` are
        forwarded, the server's complete reply (through ReadyForQuery) is dropped,
        and that connection is reset on both sides."""
        if not marker or len(marker) > _MAX_MARKER:
            raise ValueError(f"marker must be 1..{_MAX_MARKER} bytes")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.append(_Fault(bytes(marker), count))

    def disarm(self) -> None:
        """Forget every armed fault that has not fired yet."""
        with self._lock:
            self._faults.clear()

    def drop_connections(self) -> int:
        """Reset every live proxied connection now (both sides); return how many."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.cut()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for pair in pairs:
            if pair.thread is not threading.current_thread():
                pair.thread.join(max(0.0, deadline - time.monotonic()))
        return len(pairs)

    def refuse(self, refusing: bool = True) -> None:
        """While refusing, each newly accepted connection is reset at once."""
        with self._lock:
            self._refusing = refusing

    # -- counters --------------------------------------------------------------

    @property
    def faults_fired(self) -> int:
        """How many armed faults have dropped a reply and reset a connection."""
        with self._lock:
            return self._faults_fired

    @property
    def armed(self) -> int:
        """How many fault firings are still armed."""
        with self._lock:
            return sum(f.remaining for f in self._faults)

    @property
    def connections(self) -> int:
        """Live proxied connections."""
        with self._lock:
            return len(self._pairs)

    @property
    def accepted(self) -> int:
        """Connections accepted so far, refused ones included."""
        with self._lock:
            return self._accepted

    # -- internals -------------------------------------------------------------

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listener")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._closed:
                for key, _ in sel.select():
                    if key.data == "wake" or self._closed:
                        return
                    try:
                        client, _addr = self._listener.accept()
                    except OSError:
                        continue
                    self._serve(client)
        finally:
            sel.close()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._accepted += 1
            refusing = self._refusing or self._closed
        if refusing:
            _reset(client)
            return
        try:
            server = socket.create_connection(self.target, timeout=_CONNECT_TIMEOUT)
        except OSError:
            _reset(client)
            return
        for sock in (client, server):
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(self, client, server)
        with self._lock:
            if self._closed:
                pair.cut()
            self._pairs.add(pair)
        pair.thread.start()

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)

    def _match(self, hay: bytes, tail: int) -> int | None:
        """Consume one armed fault whose marker ends past ``hay[:tail]``; return where."""
        with self._lock:
            for fault in self._faults:
                pos = hay.find(fault.marker, max(0, tail - len(fault.marker) + 1))
                if pos >= 0:
                    fault.remaining -= 1
                    if not fault.remaining:
                        self._faults.remove(fault)
                    return pos
        return None

    def _fault_done(self) -> None:
        with self._lock:
            self._faults_fired += 1
