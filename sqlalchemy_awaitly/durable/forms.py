"""The step forms a workflow calls (``step(fn, key=...)``, ``step.all``, ...), written
once for both runners: each builds its step's :class:`StepSpec` (or, for a group or a
child run, what it runs), and the runner's :meth:`StepForms._go` runs its plan,
blocking (``Step``) or awaitable (``AsyncStep``), in ``drivers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar

from .children import Child, child_of
from .errors import DurableUsageError
from .groups import Group, limit_of, mapped, members_of
from .retry import Retry
from .state import RunState
from .steps import ErrorMap, StepSpec
from .timeout import UNSET, Timeout

Workflow = Callable[..., Any]


def usage_of(state: RunState, error: DurableUsageError) -> DurableUsageError:
    """``error``, recorded as the run's usage error (a workflow that swallows it still
    ends with it)."""
    if state.usage_error is None:
        state.usage_error = error
    return error


R = TypeVar("R")


class StepForms(Generic[R]):
    """What the workflow calls: ``step(fn, key=...)`` and the other forms, written once.

    Each form builds the step's :class:`StepSpec`; :meth:`_go` runs its plan, with
    blocking calls (:class:`Step`, the answer) or with ``await`` (:class:`AsyncStep`,
    an awaitable of it). In the asyncio flavour ``fn`` and the hooks may be async.
    """

    def __init__(self, state: RunState) -> None:
        self._state = state

    @property
    def workflow_id(self) -> str:
        return self._state.options.workflow_id

    def _go(self, spec: StepSpec) -> R:
        raise NotImplementedError

    def __call__(
        self,
        fn: Callable[[], Any],
        *,
        key: str,
        name: str | None = None,
        retry: Retry | int | None = None,
        timeout: Timeout | float | timedelta | None = None,
        compensate: Callable[[Any], Any] | None = None,
    ) -> R:
        """Run ``fn`` once under ``key``; on a rerun return its stored outcome instead.

        ``retry``: try it again after a failure (``Retry(attempts, ...)``, or the
        number of attempts); only the last attempt's outcome is recorded.
        ``timeout``: a limit per attempt (``Timeout(seconds, ...)``, or seconds).
        ``compensate``: ``compensate(value)`` undoes the step if the run fails later.
        """
        spec = StepSpec(key, fn, None, name, retry, timeout=timeout, compensate=compensate)
        return self._go(spec)

    def transaction(
        self,
        fn: Callable[[Any], Any],
        *,
        key: str,
        session: bool = False,
        name: str | None = None,
    ) -> R:
        """Run ``fn(connection)`` (``fn(session)`` with ``session=True``; in asyncio an
        ``AsyncConnection`` or ``AsyncSession``) in a transaction that also writes this
        step's checkpoint: both commit, or neither does."""
        return self._go(StepSpec(key, fn, session, name))

    def sleep(self, duration: float | timedelta, *, key: str, name: str | None = None) -> R:
        """Wait ``duration`` (seconds or a ``timedelta``) as a step: a rerun after it
        ended does not wait again (asyncio: without blocking the loop)."""
        return self._go(StepSpec(key, None, None, name, pause=duration))

    def try_(
        self,
        fn: Callable[[], Any],
        *,
        key: str,
        error: Any = UNSET,
        on_error: Callable[[Exception], Any] | None = None,
        name: str | None = None,
        retry: Retry | int | None = None,
        timeout: Timeout | float | timedelta | None = None,
        compensate: Callable[[Any], Any] | None = None,
    ) -> R:
        """Run ``fn``; an exception it raises becomes ``Err(error)`` (or
        ``Err(on_error(exception))``), with the exception as its cause."""
        errors = ErrorMap("try", error, on_error)
        spec = StepSpec(
            key, fn, None, name, retry, errors=errors, timeout=timeout, compensate=compensate
        )
        return self._go(spec)

    def from_result(
        self,
        fn: Callable[[], Any],
        *,
        key: str,
        error: Any = UNSET,
        on_error: Callable[[Any], Any] | None = None,
        name: str | None = None,
        compensate: Callable[[Any], Any] | None = None,
    ) -> R:
        """Run ``fn``, which returns ``Ok`` or ``Err``; an ``Err(e)`` becomes ``Err(error)``
        (or ``Err(on_error(e))``), with ``e`` as its cause."""
        errors = ErrorMap("result", error, on_error)
        return self._go(StepSpec(key, fn, None, name, errors=errors, compensate=compensate))

    def from_nullable(
        self,
        fn: Callable[[], Any],
        *,
        key: str,
        error: Any = UNSET,
        on_null: Callable[[], Any] | None = None,
        name: str | None = None,
        compensate: Callable[[Any], Any] | None = None,
    ) -> R:
        """Run ``fn``; if it returns None the step fails with ``Err(error)`` (or
        ``Err(on_null())``)."""
        errors = ErrorMap("nullable", error, on_null)
        return self._go(StepSpec(key, fn, None, name, errors=errors, compensate=compensate))

    def workflow(
        self,
        workflow: Workflow,
        *,
        key: str,
        id: str | None = None,
        deps: Any = None,
        name: str | None = None,
        **options: Any,
    ) -> R:
        """Run ``workflow(step, deps)`` as a child run, as this step: a run of its own
        (``id``, by default ``"<this run's id>:<key>"``: its own row and lease) on this
        run's store, whose ``Ok`` value or ``Err`` is the step's outcome.

        A parent resumed after a crash does not run a child that completed again, and
        resumes one that was running (see ``children.py``). ``options`` are
        ``durable.run``'s (``version``, ``lease_ttl``, ``metadata``, ...).
        """
        try:
            child = child_of(self._state.options, workflow, key, id, deps, options)
        except DurableUsageError as e:
            raise usage_of(self._state, e) from None
        return self._go(StepSpec(key, self._child(child), None, name))

    def _child(self, child: Child) -> Callable[[], Any]:
        raise NotImplementedError

    def all(
        self,
        members: Mapping[str, Callable[[], Any]] | Sequence[Callable[[], Any]],
        *,
        key: str | None = None,
        name: str | None = None,
        concurrency: int | None = None,
    ) -> R:
        """Run ``members`` (a dict of functions, or a list of them) side by side; the
        answer is their values, a dict by member id or a list in order.

        The first failure (an ``Err`` returned, an exception raised) is the step's, and
        the members still running are abandoned. With ``key`` the group is one step,
        stored as awaitly stores it; a run resumed after a crash runs only the
        members that had not finished. Without a key nothing is stored (awaitly's
        rule): a rerun runs every member again. ``concurrency``: at most this many
        members at a time.
        """
        try:
            pairs, as_list = members_of(members, "step.all")
        except DurableUsageError as e:
            raise usage_of(self._state, e) from None
        return self._group("all", pairs, as_list, key, name, concurrency)

    def map(
        self,
        items: Iterable[Any],
        fn: Callable[[Any], Any],
        *,
        key: str | None = None,
        name: str | None = None,
        concurrency: int | None = None,
    ) -> R:
        """``fn(item)`` for each of ``items``, side by side (at most ``concurrency`` at a
        time); the answer is the list of values, in order. Failures, ``key`` and
        resuming as :meth:`all`."""
        try:
            pairs = mapped(items, fn)
        except DurableUsageError as e:
            raise usage_of(self._state, e) from None
        return self._group("map", pairs, True, key, name, concurrency)

    def race(
        self,
        members: Mapping[str, Callable[[], Any]] | Sequence[Callable[[], Any]],
        *,
        name: str | None = None,
    ) -> R:
        """The first of ``members`` to end, whichever way it ends: its value, or its
        failure, which is the run's. Never stored (awaitly never checkpoints a race):
        a rerun races again. The others are abandoned: cancelled in asyncio; in a
        sync run they finish in their threads, unwatched (Python cannot stop a thread).
        """
        try:
            pairs, _ = members_of(members, "step.race")
            if not pairs:
                raise DurableUsageError("step.race needs at least one member")
        except DurableUsageError as e:
            raise usage_of(self._state, e) from None
        return self._group("race", pairs, False, None, name, None)

    def _group(
        self,
        kind: Literal["all", "map", "race"],
        pairs: tuple[tuple[str, Callable[[], Any]], ...],
        as_list: bool,
        key: str | None,
        name: str | None,
        concurrency: int | None,
    ) -> R:
        try:
            group = Group(kind, pairs, as_list, limit_of(concurrency))
        except DurableUsageError as e:
            raise usage_of(self._state, e) from None
        if key is None:  # only names it in events
            label = name if isinstance(name, str) and name else f"step.{kind}"
            return self._go(StepSpec(label, None, name=name, group=group, recorded=False))
        return self._go(StepSpec(key, None, name=name, group=group))
