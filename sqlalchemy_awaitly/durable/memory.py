"""An in-process store, as awaitly's default: for tests and scripts, gone with the process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable


class MemoryStore:
    """The key/value calls the runner makes, on a dict; expiry by the monotonic clock."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, float | None]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str) -> str | None:
        row = self._rows.get(key)
        if row is None:
            return None
        value, expires = row
        if expires is not None and expires <= time.monotonic():
            del self._rows[key]
            return None
        return value

    @staticmethod
    def _expiry(ttl: float | None) -> float | None:
        return None if ttl is None else time.monotonic() + ttl

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._live(key)

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        with self._lock:
            self._rows[key] = (value, self._expiry(ttl))

    def add(self, key: str, value: str, ttl: float | None = None) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._rows[key] = (value, self._expiry(ttl))
            return True

    def add_and_get(
        self, key: str, value: str, ttl: float | None = None, *, other_key: str
    ) -> tuple[bool, str | None]:
        """``add``, then ``other_key``'s value (a run's lease, then its state), as the
        SQLAlchemy stores answer it: whether ``key`` holds ``value`` now."""
        self.add(key, value, ttl)
        return self.get(key) == value, self.get(other_key)

    def touch(self, key: str, ttl: float | None, *, if_value: str | None = None) -> bool:
        with self._lock:
            value = self._live(key)
            if value is None or (if_value is not None and value != if_value):
                return False
            self._rows[key] = (value, self._expiry(ttl))
            return True

    def delete(self, key: str, *, if_value: str | None = None) -> bool:
        with self._lock:
            value = self._live(key)
            if value is None or (if_value is not None and value != if_value):
                return False
            del self._rows[key]
            return True

    def set_guarded(
        self,
        key: str,
        value: str,
        ttl: float | None = None,
        *,
        guard_key: str,
        guard_value: str,
    ) -> bool:
        with self._lock:
            if self._live(guard_key) != guard_value:
                return False
            self._rows[key] = (value, self._expiry(ttl))
            return True

    def delete_guarded(
        self, key: str, *, guard_key: str, guard_value: str, release: bool = False
    ) -> bool:
        with self._lock:
            if self._live(guard_key) != guard_value:
                return False
            if release:  # both go; True: the guard held
                self._rows.pop(key, None)
                del self._rows[guard_key]
                return True
            if key not in self._rows:
                return False
            del self._rows[key]
            return True

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        with self._lock:
            found = {k: self._live(k) for k in keys}
        return {k: v for k, v in found.items() if v is not None}

    def delete_many(self, keys: Iterable[str]) -> int:
        with self._lock:
            gone = [k for k in set(keys) if self._live(k) is not None]
            for k in gone:
                del self._rows[k]
            return len(gone)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(k for k in list(self._rows) if k.startswith(prefix) and self._live(k))


default_store = MemoryStore()
"""The store ``run`` uses when given none: one per process, like awaitly's."""
