"""Workflows registered by type and version, and the runs started through them.

Nothing in an awaitly row says which workflow it belongs to (``workflowName``
is the run id) or what it was called with. A run started through a
:class:`Registry` records both in its row from its first write, before any
step, in the snapshot's metadata (which awaitly carries through unchanged):
``{"sqlalchemyAwaitly": {"workflow": {"type": ..., "version": ..., "input":
...}}}``. Recovery (``recovery.py``) resumes a crashed one with its registered
workflow and recorded input. A Node.js service
makes its runs recoverable by passing that metadata to ``durable.run``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .api import run_registered, run_registered_async
from .errors import DurableUsageError
from .results import Result
from .values import check_json

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Registered:
    """A workflow ``fn(step, deps, input)`` under a type name and version; ``deps()``
    makes what it needs (None: no deps; an asyncio run may await it)."""

    type: str
    version: int
    fn: Callable[..., Any]
    deps: Callable[[], Any] | None = None

    def bound(self, input_value: Any) -> Callable[..., Any]:
        """The workflow as ``durable.run`` calls it, with the run's input."""
        fn = self.fn
        if self.is_async:

            async def run_async(step: Any, deps: Any) -> Any:
                return await fn(step, deps, input_value)

            return run_async

        def run(step: Any, deps: Any) -> Any:
            return fn(step, deps, input_value)

        return run

    @property
    def is_async(self) -> bool:
        return asyncio.iscoroutinefunction(self.fn)

    def record(self, input_value: Any) -> dict[str, Any]:
        return {"type": self.type, "version": self.version, "input": input_value}

    def made_deps(self) -> Any:
        """What the deps factory makes (an awaitable, for an async factory)."""
        return self.deps() if self.deps is not None else None

    def run_arguments(self, input_value: Any, **options: Any) -> dict[str, Any]:
        """``run_registered``'s arguments (but deps) for a run of this on ``input_value``."""
        return {
            "workflow": self.bound(input_value),
            "registered": self.record(input_value),
            "version": self.version,
            **options,
        }


class Registry:
    """Workflows by type name and version, to start runs that can be recovered."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], Registered] = {}

    def register(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        version: int = 1,
        deps: Callable[[], Any] | None = None,
    ) -> None:
        """Register ``fn(step, deps, input)`` as type ``name`` at ``version``."""
        if not isinstance(name, str) or not name:
            raise DurableUsageError(f"a workflow type is a non-empty str, got {name!r}")
        if isinstance(version, bool) or not isinstance(version, int):
            raise DurableUsageError(f"a workflow version is an int, got {version!r}")
        if not callable(fn) or (deps is not None and not callable(deps)):
            raise DurableUsageError(f"{name!r}: the workflow and its deps factory are callables")
        if (name, version) in self._entries:
            raise DurableUsageError(f"workflow {name!r} version {version} is registered already")
        self._entries[(name, version)] = Registered(name, version, fn, deps)

    def workflow(
        self, name: str, *, version: int = 1, deps: Callable[[], Any] | None = None
    ) -> Callable[[F], F]:
        """The decorator form of :meth:`register`."""

        def add(fn: F) -> F:
            self.register(name, fn, version=version, deps=deps)
            return fn

        return add

    def entries(self) -> list[Registered]:
        """Every registered workflow, by type and version."""
        return [self._entries[k] for k in sorted(self._entries)]

    def get(self, name: object, version: object) -> Registered | None:
        if not isinstance(name, str) or isinstance(version, bool) or not isinstance(version, int):
            return None
        return self._entries.get((name, version))

    def _started(self, name: str, version: int | None, input_value: Any) -> Registered:
        """The workflow a new run starts (its latest version unless given), its input
        checked."""
        check_json(input_value, "a registered run's input")
        return self._entry(name, version)

    def _entry(self, name: str, version: int | None) -> Registered:
        if version is None:
            versions = [v for (n, v) in self._entries if n == name]
            version = max(versions) if versions else None
        entry = None if version is None else self._entries.get((name, version))
        if entry is None:
            raise DurableUsageError(f"no workflow {name!r} (version {version}) is registered")
        return entry

    def start(
        self,
        store: object,
        name: str,
        *,
        id: str,
        input: Any = None,
        version: int | None = None,
        **options: Any,
    ) -> Result[Any, Any]:
        """Run workflow ``name`` (its latest version unless given) under ``id`` with
        ``input`` (JSON), recorded so that :func:`recover` can resume it.
        ``options`` are ``durable.run``'s."""
        entry = self._started(name, version, input)
        arguments = entry.run_arguments(input, id=id, store=store, **options)
        return run_registered(entry.made_deps(), **arguments)

    async def start_async(
        self,
        store: object,
        name: str,
        *,
        id: str,
        input: Any = None,
        version: int | None = None,
        **options: Any,
    ) -> Result[Any, Any]:
        """The asyncio :meth:`start` (``async def fn(step, deps, input)``)."""
        entry = self._started(name, version, input)
        arguments = entry.run_arguments(input, id=id, store=store, **options)
        return await run_registered_async(await made_async(entry), **arguments)


async def made_async(entry: Registered) -> Any:
    """The deps of an asyncio run: the factory may be async."""
    deps = entry.made_deps()
    return await deps if inspect.isawaitable(deps) else deps
