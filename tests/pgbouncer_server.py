"""Run a throwaway PgBouncer in front of a test PostgreSQL server.

PgBouncer comes from the local binary (PATH or /usr/sbin/pgbouncer; Debian's
``pgbouncer`` package, which ``.ci/run`` installs). Clients connect as ``postgres``
with no password; PgBouncer logs into the server as ``postgres`` (or a forced
user), so a trust-auth server needs no credentials at all.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import psycopg
from postgres_server import (
    SUPERUSER,
    LocalPostgres,
    _free_port,
    _popen,
    launch_retrying_bind,
    service_account,
    stop_process,
    tail_of,
)

PoolMode = Literal["session", "transaction"]
START_TIMEOUT = 15.0
_BIND_ERRORS = ("Address already in use", "bind", "could not create any listening")


class PgBouncerUnavailable(RuntimeError):
    """No PgBouncer could be started; the message says why."""


class _BindFailed(PgBouncerUnavailable):
    """PgBouncer could not bind its port (worth retrying on another)."""


def find_pgbouncer() -> pathlib.Path | None:
    """The pgbouncer binary on PATH, else Debian's /usr/sbin/pgbouncer, else None."""
    found = shutil.which("pgbouncer")
    if found:
        return pathlib.Path(found)
    candidate = pathlib.Path("/usr/sbin/pgbouncer")
    return candidate if os.access(candidate, os.X_OK) else None


def pgbouncer_version(binary: pathlib.Path) -> tuple[int, int, int]:
    """Parse ``PgBouncer 1.18.0`` from ``pgbouncer --version``."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PgBouncerUnavailable(f"cannot run {binary} --version: {exc!r}") from exc
    match = re.search(r"PgBouncer\s+(\d+)\.(\d+)(?:\.(\d+))?", out.stdout + out.stderr)
    if match is None:
        raise PgBouncerUnavailable(f"unrecognised `{binary} --version` output: {out.stdout!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _ini_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class LocalPgBouncer:
    """A throwaway PgBouncer on 127.0.0.1 and a free port, in front of one server.

    Construction only writes the config; :meth:`start` launches it (in the
    foreground, as a child of this process) and waits until ``SELECT 1`` answers
    through it. ``settings`` adds or overrides ``[pgbouncer]`` entries.
    """

    def __init__(
        self,
        server_host: str,
        server_port: int,
        pool_mode: PoolMode,
        *,
        default_pool_size: int = 20,
        max_client_conn: int = 500,
        ignore_startup_parameters: str | None = None,
        server_user: str | None = None,
        server_password: str | None = None,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        if pool_mode not in ("session", "transaction"):
            raise ValueError(f"pool_mode must be 'session' or 'transaction', not {pool_mode!r}")
        binary = find_pgbouncer()
        if binary is None:
            raise PgBouncerUnavailable(
                "pgbouncer is not installed (not on PATH, no /usr/sbin/pgbouncer); "
                "install the Debian package: apt-get install pgbouncer"
            )
        self.binary = binary
        self._version = pgbouncer_version(binary)
        self.server_host = server_host
        self.server_port = server_port
        self.pool_mode: PoolMode = pool_mode
        self.default_pool_size = default_pool_size
        self.max_client_conn = max_client_conn
        self.ignore_startup_parameters = ignore_startup_parameters
        self.server_user = server_user
        self.server_password = server_password
        self.settings = dict(settings or {})
        self.tmpdir = pathlib.Path(tempfile.mkdtemp(prefix="awpgb-", dir="/tmp"))
        self.inifile = self.tmpdir / "pgbouncer.ini"
        self.userlist = self.tmpdir / "userlist.txt"
        self.logfile = self.tmpdir / "pgbouncer.log"
        self.logfile.touch()
        self._port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        env = {**os.environ, "HOME": str(self.tmpdir)}
        # Own session: a terminal Ctrl-C reaches only pytest.
        self._io: dict[str, Any] = {"cwd": self.tmpdir, "env": env, "stdin": subprocess.DEVNULL}
        self._io.update(stderr=subprocess.STDOUT, start_new_session=True)
        self._account = service_account()  # pgbouncer refuses to run as root
        if self._account is not None:
            uid, gid = self._account.pw_uid, self._account.pw_gid
            self._io.update(user=uid, group=gid, extra_groups=[])
        self._write_config()
        atexit.register(self.cleanup)

    # -- properties -------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def version(self) -> tuple[int, int, int]:
        return self._version

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database through the bouncer."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self._port}/postgres"

    @property
    def conninfo(self) -> str:
        """libpq conninfo of the ``postgres`` database through the bouncer."""
        return f"host=127.0.0.1 port={self._port} user={SUPERUSER} dbname=postgres"

    @property
    def admin_conninfo(self) -> str:
        """The admin console (``SHOW POOLS`` etc.; simple query protocol only)."""
        return f"host=127.0.0.1 port={self._port} user={SUPERUSER} dbname=pgbouncer"

    @property
    def pid(self) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def log_tail(self, lines: int = 30, since: int = 0) -> str:
        return tail_of(self.logfile, lines, since)

    # -- config -----------------------------------------------------------------

    def _write_config(self) -> None:
        target = f"host={self.server_host} port={self.server_port}"
        if self.server_user is not None:
            target += f" user={self.server_user}"
        if self.server_password is not None:
            escaped = self.server_password.replace("'", "''")  # pgbouncer's only escape
            target += f" password='{escaped}'"
        settings: dict[str, object] = {
            "listen_addr": "127.0.0.1",
            "listen_port": self._port,
            "unix_socket_dir": "",  # TCP only: nothing shared in /tmp
            "auth_type": "trust",  # trust still needs the user name in auth_file
            "auth_file": self.userlist,
            "admin_users": SUPERUSER,
            "stats_users": SUPERUSER,
            "pool_mode": self.pool_mode,
            "default_pool_size": self.default_pool_size,
            "max_client_conn": self.max_client_conn,
            "server_reset_query": "DISCARD ALL",  # used in session mode only
            "server_login_retry": 1,  # default 15 s after a failed server login
            "query_wait_timeout": 30,  # a starved client errors out instead of hanging 120 s
            "logfile": "",  # log to stderr, which goes to self.logfile
            "pidfile": "",
        }
        if self.ignore_startup_parameters is not None:
            settings["ignore_startup_parameters"] = self.ignore_startup_parameters
        if self._version >= (1, 21):  # prepared statement tracking exists: keep it off
            settings["max_prepared_statements"] = 0
        settings.update(self.settings)
        lines = ["[databases]", f"* = {target}", "", "[pgbouncer]"]
        lines += [f"{key} = {_ini_value(value)}" for key, value in settings.items()]
        self.inifile.write_text("\n".join(lines) + "\n")
        users = {SUPERUSER} | ({self.server_user} if self.server_user else set())
        quoted = (user.replace('"', '""') for user in sorted(users))
        self.userlist.write_text("".join(f'"{user}" ""\n' for user in quoted))
        if self._account is not None:
            uid, gid = self._account.pw_uid, self._account.pw_gid
            for path in (self.tmpdir, self.inifile, self.userlist, self.logfile):
                os.chown(path, uid, gid)

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Launch (no-op if running) and wait until ``SELECT 1`` answers through it."""
        if self.pid is not None:
            return
        try:
            launch_retrying_bind(
                self._launch, _BindFailed, None if self._started_once else self._new_port
            )
            self._started_once = True
        except (OSError, subprocess.SubprocessError) as exc:
            raise PgBouncerUnavailable(f"cannot run {self.binary}: {exc!r}") from exc

    def _launch(self) -> None:
        offset = self.logfile.stat().st_size
        with open(self.logfile, "ab") as log:
            self._proc = _popen([str(self.binary), str(self.inifile)], stdout=log, **self._io)
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                tail = self.log_tail(since=offset)
                error = (
                    _BindFailed if any(e in tail for e in _BIND_ERRORS) else PgBouncerUnavailable
                )
                raise error(f"pgbouncer exited with {rc} on port {self._port}; log tail:\n{tail}")
            wait = max(1, min(2, int(deadline - time.monotonic())))
            try:
                with psycopg.connect(self.conninfo, connect_timeout=wait, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        self.stop()
        tail = self.log_tail(since=offset)
        raise PgBouncerUnavailable(
            f"pgbouncer not ready within {START_TIMEOUT:.0f} s (last error: {last!r}); "
            f"log tail:\n{tail}"
        )

    def _new_port(self) -> None:
        self._port = _free_port()
        self._write_config()

    def stop(self) -> None:
        """Immediate shutdown of our own pgbouncer (SIGTERM, then SIGKILL after 10 s)."""
        stop_process(self._proc, signal.SIGTERM)  # SIGINT would wait for clients to finish
        self._proc = None

    def cleanup(self) -> None:
        """Stop if running and delete the temp dir; safe to call twice."""
        self.stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        atexit.unregister(self.cleanup)

    def __enter__(self) -> LocalPgBouncer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def provide_pgbouncer(
    server: str | LocalPostgres, pool_mode: PoolMode, **options: Any
) -> Iterator[LocalPgBouncer]:
    """Yield a started LocalPgBouncer in front of a server URL or LocalPostgres.

    A URL's user and password (if not ``postgres`` without a password) become the
    login PgBouncer forces on the server; clients still connect as ``postgres``.
    ``options`` go to :class:`LocalPgBouncer`.
    """
    if isinstance(server, LocalPostgres):
        host, port = "127.0.0.1", server.port
    else:
        from sqlalchemy.engine import make_url

        url = make_url(server)
        host, port = url.host or "127.0.0.1", url.port or 5432
        if url.username not in (None, SUPERUSER) or url.password is not None:
            options.setdefault("server_user", url.username or SUPERUSER)
            if url.password is not None:
                options.setdefault("server_password", url.password)
    bouncer = LocalPgBouncer(host, port, pool_mode, **options)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.cleanup()
