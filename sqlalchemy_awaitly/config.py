"""Where the store's database is: an engine the caller owns, or a URL to build one from."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import URL, make_url

from .errors import ConfigurationError

# SQLAlchemy's own pool keywords, accepted in ``pool=``.
POOL_OPTIONS = frozenset(
    {
        "pool_size",
        "max_overflow",
        "pool_timeout",
        "pool_recycle",
        "pool_pre_ping",
        "pool_use_lifo",
        "pool_reset_on_return",
        "poolclass",
    }
)
CONNECT_TIMEOUT_SECONDS = 10
# Each driver's name for it (libpq's for psycopg and psycopg2); others get none.
_CONNECT_TIMEOUT_ARGUMENT = {
    "psycopg": "connect_timeout",
    "psycopg_async": "connect_timeout",
    "psycopg2": "connect_timeout",
    "asyncpg": "timeout",
}

PREPARE_THRESHOLD = "prepare_threshold"
PSYCOPG_DRIVERS = frozenset({"psycopg", "psycopg_async"})  # the URL's names for psycopg 3
_NEVER = ("none", "off", "never")


class Unset:
    """The default of an option whose absence means something other than any value."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


def prepare_threshold_of(value: object, source: str) -> int | None:
    """psycopg's ``prepare_threshold``: after how many runs a statement is prepared on the
    server (unsafe behind PgBouncer before 1.21, see docs/pgbouncer.md); None never prepares.

    From a URL it arrives as text: a whole number, or ``none`` / ``off`` / ``never``.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _NEVER:
            return None
        if text.isdigit():
            return int(text)
    elif value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ConfigurationError(
        f"{source} must be a whole number >= 0 or one of {'/'.join(_NEVER)}, got {value!r}"
    )


def take_prepare_threshold(url: URL, option: int | Unset | None) -> tuple[URL, int | None, bool]:
    """The threshold for an engine the store builds (the option, else the URL's, else None),
    whether one was given, and the URL without it: SQLAlchemy would hand psycopg the text
    as it stands."""
    in_url = url.query.get(PREPARE_THRESHOLD)
    if in_url is not None:
        url = url.difference_update_query([PREPARE_THRESHOLD])
        if not isinstance(option, Unset):
            raise ConfigurationError(
                "prepare_threshold is given both as an option and in the URL: give one"
            )
        return url, prepare_threshold_of(in_url, "the URL's prepare_threshold"), True
    if isinstance(option, Unset):
        return url, None, False
    return url, prepare_threshold_of(option, "prepare_threshold"), True


def resolve_url(
    *,
    connection_string: str | URL | None,
    host: str | None,
    port: int | None,
    database: str | None,
    user: str | None,
    password: str | None,
    asyncio: bool,
) -> URL:
    """The URL to build an engine from: explicit options, else ``DATABASE_URL``."""
    parts = {"host": host, "port": port, "database": database, "user": user, "password": password}
    given = [name for name, value in parts.items() if value is not None]
    if connection_string is not None and given:
        raise ConfigurationError(
            f"pass either connection_string or individual options, not both (got {given})"
        )
    if connection_string is None and not given:
        connection_string = os.environ.get("DATABASE_URL") or None
        if connection_string is None:
            raise ConfigurationError(
                "no database given: pass engine=, connection_string= (a SQLAlchemy URL such as "
                "'postgresql://user:pass@host/db' or 'sqlite:///state.db'), or host=/database=/"
                "user=/password=, or set the DATABASE_URL environment variable"
            )
    if connection_string is not None:
        return url_of(connection_string, asyncio=asyncio)
    url = URL.create(
        "postgresql",
        username=user,
        password=password,
        host=host or "localhost",
        port=port,
        database=database,
    )
    return _with_driver(url, asyncio)


def url_of(text: str | URL, *, asyncio: bool = False) -> URL:
    """A URL given as text, with this package's drivers (a plain ``postgresql://``: psycopg 3)."""
    try:
        url = make_url(text)
    except Exception as e:
        raise ConfigurationError(f"not a database URL: {shown_url(text)!r} ({e})") from None
    return _with_driver(url, asyncio)


# user:password@ in text that does not parse as a URL
_PASSWORD_IN_TEXT = re.compile(r"(//[^:/@\s]*:)([^@\s]*)(@)")
HIDDEN = "***"


def shown_url(url: str | URL) -> str:
    """The URL as it may be printed or raised: its password hidden, even if it does not parse."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _PASSWORD_IN_TEXT.sub(rf"\g<1>{HIDDEN}\g<3>", url)


def password_of(url: str | URL) -> str | None:
    """The password in ``url``, if there is one (to say it was hidden), parsed or not."""
    try:
        password = make_url(url).password
    except Exception:
        match = _PASSWORD_IN_TEXT.search(str(url))
        return (match.group(2) or None) if match else None
    return str(password) if password else None


def _with_driver(url: URL, asyncio: bool) -> URL:
    """A bare ``postgresql://`` means psycopg 3; a bare ``sqlite://`` gets an async driver."""
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
    elif backend == "sqlite" and asyncio and url.drivername == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return url


MAX_STATEMENT_TIMEOUT_SECONDS = 24 * 3600.0


def statement_timeout_of(seconds: object) -> float | None:
    """``statement_timeout`` in seconds: a positive finite number up to a day, or None."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ConfigurationError(
            f"statement_timeout must be a number of seconds or None, got {seconds!r}"
        )
    value = float(seconds)
    if not math.isfinite(value) or not 0 < value <= MAX_STATEMENT_TIMEOUT_SECONDS:
        raise ConfigurationError(
            f"statement_timeout must be more than 0 and at most a day (in seconds), got {seconds!r}"
        )
    return value


def engine_arguments(
    url: URL,
    pool: Mapping[str, Any] | None,
    prepare_threshold: int | None = None,
    statement_timeout: float | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``create_engine`` for an engine the store owns."""
    options = dict(pool or {})
    unknown = sorted(set(options) - POOL_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"unknown pool option(s) {unknown}; accepted: {sorted(POOL_OPTIONS)}"
        )
    # The store's own engine serves only single statements: autocommit spares
    # the per-call BEGIN/ROLLBACK round trips and the reset on return to the pool.
    options.setdefault("isolation_level", "AUTOCOMMIT")
    options.setdefault("pool_reset_on_return", None)
    connect_args: dict[str, Any] = {}
    # A server that is down must give an error, not a hang: libpq's connect_timeout
    # (psycopg, psycopg2), asyncpg's timeout.
    timeout_name = _CONNECT_TIMEOUT_ARGUMENT.get(url.get_driver_name())
    is_postgresql = url.get_backend_name() == "postgresql"
    if is_postgresql and timeout_name is not None and timeout_name not in url.query:
        connect_args[timeout_name] = CONNECT_TIMEOUT_SECONDS
    if url.get_driver_name() in PSYCOPG_DRIVERS:
        connect_args[PREPARE_THRESHOLD] = prepare_threshold
    if url.get_backend_name() == "sqlite" and statement_timeout is not None:
        connect_args["timeout"] = statement_timeout  # sqlite3's busy timeout
    if connect_args:
        options["connect_args"] = connect_args
    return options
