"""Provide a real PostgreSQL server to the test suite.

Order of preference: ``TEST_DATABASE_URL``, a testcontainers/Docker container,
then a throwaway cluster started from the local PostgreSQL server binaries.
``AWAITLY_TEST_PG_BINDIR`` names those binaries and skips the container.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pathlib
import pwd
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import psycopg

SUPERUSER = "postgres"
# The one role that must give a password (every other connection is trusted):
# tests of a rejected password log in as it.
PASSWORD_ROLE = "awaitly_password_probe"
# Tests need a non-C default collation; C is only the last resort.
LOCALES = ("C.UTF-8", "en_US.UTF-8", "C")
_BIND_ERRORS = ("could not bind", "Address already in use", "could not create any TCP/IP sockets")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be provided; the message says what was tried."""


class _BindFailed(PostgresUnavailable):
    """The postmaster could not bind its port (worth retrying)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pdeathsig_hook() -> Callable[[], None] | None:
    """preexec_fn making the kernel SIGINT the server when our spawning thread dies.

    CPython runs preexec_fn *after* the setgid/setuid of ``user=``/``group=``; only a
    credential change clears PR_SET_PDEATHSIG, so the two combine fine (verified).
    """
    if not sys.platform.startswith("linux"):
        return None  # elsewhere only the atexit backstop applies
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork
    parent = os.getpid()

    def hook() -> None:
        prctl(1, int(signal.SIGINT))  # PR_SET_PDEATHSIG; SIGINT = fast shutdown
        if os.getppid() != parent:  # we were orphaned before prctl took effect
            os._exit(1)

    return hook


_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_spawner_lock = threading.Lock()
_spawner: threading.Thread | None = None


def _run_jobs() -> None:
    while True:
        _jobs.get()()


def _popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Spawn from the main thread or from a daemon thread that never exits.

    PDEATHSIG fires when the spawning *thread* exits (verified), so a server started
    from e.g. an executor thread would otherwise die with that thread.
    """
    kwargs["preexec_fn"] = _pdeathsig_hook()
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(cmd, **kwargs)
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(target=_run_jobs, name="postgres-spawner", daemon=True)
            _spawner.start()
    result: Future[subprocess.Popen[bytes]] = Future()

    def job() -> None:
        try:
            result.set_result(subprocess.Popen(cmd, **kwargs))
        except BaseException as exc:
            result.set_exception(exc)

    _jobs.put(job)
    return result.result()


def _unavailable(tried: list[str]) -> PostgresUnavailable:
    return PostgresUnavailable("no PostgreSQL server available; tried:\n  " + "\n  ".join(tried))


def _as_psycopg(url: str) -> str:
    """Force SQLAlchemy's psycopg 3 dialect on a postgres URL."""
    return re.sub(r"^(postgresql|postgres)(\+\w+)?://", "postgresql+psycopg://", url)


def service_account() -> pwd.struct_passwd | None:
    """When we are root, the account a server must run as (PostgreSQL and PgBouncer
    refuse root): ``postgres``, else ``nobody``. None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return pwd.getpwnam("nobody")


def tail_of(logfile: pathlib.Path, lines: int = 30, since: int = 0) -> str:
    """The last ``lines`` lines written to ``logfile`` from byte ``since`` on."""
    with contextlib.suppress(OSError), open(logfile, "rb") as f:
        f.seek(since)
        return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    return "<no log>"


def stop_process(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    """``sig`` to our own child if it still runs, then SIGKILL after 10 s."""
    if proc is not None and proc.poll() is None:  # Popen never signals a reaped PID
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def launch_retrying_bind(
    launch: Callable[[], None], bind_failed: type[Exception], new_port: Callable[[], None] | None
) -> None:
    """Run ``launch``; while it fails for a taken port, up to 6 times, on a new port
    when ``new_port`` is given (nobody relies on the old one yet)."""
    for attempt in range(6):
        try:
            launch()
            return
        except bind_failed:
            if attempt == 5:
                raise
            if new_port is not None:
                new_port()
            time.sleep(0.5 * (attempt + 1))


class LocalPostgres:
    """A throwaway PostgreSQL cluster run from the local server binaries."""

    def __init__(self, bindir: pathlib.Path) -> None:
        self.bindir = bindir
        # Short path: the unix socket path length is limited (~107 bytes).
        self.tmpdir = pathlib.Path(tempfile.mkdtemp(prefix="awpg-", dir="/tmp"))
        self.datadir = self.tmpdir / "data"
        self.sockdir = self.tmpdir / "sock"
        self.logfile = self.tmpdir / "postgres.log"
        self.sockdir.mkdir()
        self.logfile.touch()
        self.port = _free_port()
        self.locale: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        env = {**os.environ, "HOME": str(self.tmpdir)}
        # Shared by initdb and postgres. Own session: a terminal Ctrl-C reaches only pytest.
        self._io: dict[str, Any] = {"cwd": self.tmpdir, "env": env, "stdin": subprocess.DEVNULL}
        self._io.update(stderr=subprocess.STDOUT, start_new_session=True)
        account = service_account()
        if account is not None:
            for path in (self.tmpdir, self.sockdir, self.logfile):
                os.chown(path, account.pw_uid, account.pw_gid)
            self._io.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        atexit.register(self.cleanup)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"

    @property
    def pid(self) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def log_tail(self, lines: int = 30, since: int = 0) -> str:
        return tail_of(self.logfile, lines, since)

    def _initdb(self) -> None:
        errors = []
        for locale in LOCALES:
            shutil.rmtree(self.datadir, ignore_errors=True)
            cmd = [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER]
            cmd += ["-A", "trust", "-E", "UTF8", f"--locale={locale}", "--no-sync"]
            offset = self.logfile.stat().st_size
            with open(self.logfile, "ab") as log:
                rc = subprocess.run(cmd, stdout=log, timeout=120, **self._io).returncode
            if rc == 0:
                self.locale = locale
                self._require_password_of(PASSWORD_ROLE)
                return
            errors.append(f"initdb --locale={locale} exited {rc}:\n{self.log_tail(10, offset)}")
        raise PostgresUnavailable("initdb failed:\n" + "\n".join(errors))

    def _require_password_of(self, role: str) -> None:
        """A pg_hba.conf line, ahead of initdb's "trust" ones, that asks ``role`` for a password."""
        hba = self.datadir / "pg_hba.conf"
        line = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(line + hba.read_text())

    def start(self) -> None:
        """initdb on first call; afterwards restart the same data dir on the same port."""
        if self.pid is not None:
            return
        try:
            if self.locale is None:
                self._initdb()
            launch_retrying_bind(
                self._launch, _BindFailed, None if self._started_once else self._new_port
            )
            self._started_once = True
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresUnavailable(f"cannot run PostgreSQL from {self.bindir}: {exc!r}") from exc

    def _launch(self) -> None:
        cmd = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        cmd += ["-h", "127.0.0.1", "-k", str(self.sockdir)]
        # lc_messages=C: the store tells a refused password or a missing database by
        # the server's English message (psycopg gives connection failures no SQLSTATE).
        settings = ("fsync=on", "max_connections=200", "shared_buffers=128MB", "lc_messages=C")
        for setting in settings:
            cmd += ["-c", setting]
        cmd += ["-c", "logging_collector=off"]
        offset = self.logfile.stat().st_size
        with open(self.logfile, "ab") as log:
            self._proc = _popen(cmd, stdout=log, **self._io)  # direct child: no pg_ctl
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                tail = self.log_tail(since=offset)
                error = _BindFailed if any(e in tail for e in _BIND_ERRORS) else PostgresUnavailable
                raise error(f"postgres exited with {rc} on port {self.port}; log tail:\n{tail}")
            try:
                with psycopg.connect(self.conninfo, connect_timeout=1) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.stop()
        tail = self.log_tail(since=offset)
        raise PostgresUnavailable(f"postgres not ready within 30 s; log tail:\n{tail}")

    def _new_port(self) -> None:
        self.port = _free_port()

    def stop(self) -> None:
        """Fast shutdown of our own postmaster only (SIGINT, then SIGKILL after 10 s)."""
        stop_process(self._proc, signal.SIGINT)
        self._proc = None

    def cleanup(self) -> None:
        """Stop if running and delete the temp dir; safe to call twice."""
        self.stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        atexit.unregister(self.cleanup)


# A bin dir (initdb, postgres) to test against instead of the system's, e.g. another
# major from .ci/embedded-postgres; when set, nothing else is looked for.
BINDIR_ENV = "AWAITLY_TEST_PG_BINDIR"


def _usable(d: pathlib.Path) -> bool:
    return (d / "initdb").is_file() and (d / "postgres").is_file()


def find_bindir() -> pathlib.Path | None:
    """Locate a PostgreSQL bin dir containing both initdb and postgres.

    ``AWAITLY_TEST_PG_BINDIR`` wins; a wrong one raises rather than quietly testing
    some other version. Then ``pg_config``, then the newest /usr/lib/postgresql/*/bin.
    """
    if chosen := os.environ.get(BINDIR_ENV):
        if not _usable(bindir := pathlib.Path(chosen).absolute()):
            raise PostgresUnavailable(f"{BINDIR_ENV}={chosen}: no initdb and postgres in {bindir}")
        return bindir

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        cmd = ["pg_config", "--bindir"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
        if _usable(candidate := pathlib.Path(out.stdout.strip())):
            return candidate

    def version(d: pathlib.Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", d.parent.name))

    found = [d for d in pathlib.Path("/usr/lib/postgresql").glob("*/bin") if _usable(d)]
    return max(found, key=version) if found else None


def _docker_answers() -> str | None:
    """Return None if testcontainers imports and a Docker daemon answers, else why not."""
    try:
        import docker  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except Exception as exc:
        return f"testcontainers unavailable ({exc!r})"
    try:
        docker.from_env(timeout=2).ping()
    except Exception as exc:
        return f"no Docker daemon ({exc!r})"
    return None


@contextlib.contextmanager
def provide_postgres() -> Iterator[tuple[str, LocalPostgres | None]]:
    """Yield (SQLAlchemy URL, LocalPostgres or None) for the first source that works."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield _as_psycopg(url) if re.match(r"postgres(ql)?://", url) else url, None
        return
    tried = ["TEST_DATABASE_URL: not set"]
    if os.environ.get(BINDIR_ENV):
        tried.append(f"testcontainers: not tried, {BINDIR_ENV} is set")
    elif (why := _docker_answers()) is None:
        from testcontainers.community.postgres import (  # type: ignore[import-not-found, import-untyped, unused-ignore]
            PostgresContainer,
        )

        with PostgresContainer("postgres:15") as container:
            yield _as_psycopg(container.get_connection_url()), None
        return
    else:
        tried.append(f"testcontainers: {why}")
    bindir = find_bindir()
    if bindir is None:
        tried.append("local binaries: no initdb+postgres (pg_config, /usr/lib/postgresql/*/bin)")
        raise _unavailable(tried)
    server = LocalPostgres(bindir)
    try:
        try:
            server.start()
        except PostgresUnavailable as exc:
            tried.append(f"local binaries in {bindir}: {exc}")
            raise _unavailable(tried) from exc
        yield server.url, server
    finally:
        server.cleanup()
