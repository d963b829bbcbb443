"""Where the store's database is: an engine the caller owns, or a URL to build one from."""

from __future__ import annotations

import os
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
        raise ConfigurationError(f"not a database URL: {e}") from None
    return _with_driver(url, asyncio)


def _with_driver(url: URL, asyncio: bool) -> URL:
    """A bare ``postgresql://`` means psycopg 3; a bare ``sqlite://`` gets an async driver."""
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
    elif backend == "sqlite" and asyncio and url.drivername == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return url


def engine_arguments(url: URL, pool: Mapping[str, Any] | None) -> dict[str, Any]:
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
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        # A server that is down must give an error, not a hang.
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    return options
