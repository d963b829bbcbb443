"""One workflow body for both runners, and a store of each kind to run it on.

A test writes its workflow once, as a generator that yields steps::

    def body(deps):
        user = yield "fetch-user", lambda: {"id": "123"}
        order = yield Tx("create-order", lambda conn: ...)   # a transactional step
        return order

:func:`workflow` turns it into ``def wf(step, deps)`` for ``durable.run`` or
``async def wf(step, deps)`` for ``durable.run_async``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from sqlalchemy_awaitly import durable

Body = Callable[[Any], Generator[Any, Any, Any]]


@dataclass(frozen=True)
class Tx:
    key: str
    fn: Callable[[Any], Any]
    session: bool = False


@dataclass(frozen=True)
class With:
    """A step with options, through ``step`` or one of its forms (``form="try_"``):
    ``yield With("key", fn, retry=Retry(3))``."""

    key: str
    fn: Callable[[], Any]
    options: dict[str, Any]
    form: str

    def __init__(self, key: str, fn: Callable[[], Any], form: str = "", **options: Any) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "form", form)

    def on(self, step: Any) -> Any:
        call = getattr(step, self.form) if self.form else step
        return call(self.fn, key=self.key, **self.options)


@dataclass(frozen=True)
class Form:
    """A step form called with these arguments: ``yield Form("all", members, key="g")``."""

    form: str
    args: tuple[Any, ...]
    options: dict[str, Any]

    def __init__(self, form: str, *args: Any, **options: Any) -> None:
        object.__setattr__(self, "form", form)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "options", options)

    def on(self, step: Any) -> Any:
        return getattr(step, self.form)(*self.args, **self.options)


@dataclass(frozen=True)
class Sleep:
    key: str
    duration: Any
    name: str | None = None


def workflow(body: Body, flavour: str) -> Callable[..., Any]:
    def sync(step: Any, deps: Any) -> Any:
        steps = body(deps)
        sent: Any = None
        while True:
            try:
                item = steps.send(sent)
            except StopIteration as done:
                return done.value
            if isinstance(item, Tx):
                sent = step.transaction(item.fn, key=item.key, session=item.session)
            elif isinstance(item, (With, Form)):
                sent = item.on(step)
            elif isinstance(item, Sleep):
                sent = step.sleep(item.duration, key=item.key, name=item.name)
            else:
                key, fn = item
                sent = step(fn, key=key)

    async def asynchronous(step: Any, deps: Any) -> Any:
        steps = body(deps)
        sent: Any = None
        while True:
            try:
                item = steps.send(sent)
            except StopIteration as done:
                return done.value
            if isinstance(item, Tx):
                sent = await step.transaction(
                    _awaitable(item.fn), key=item.key, session=item.session
                )
            elif isinstance(item, (With, Form)):
                sent = await item.on(step)
            elif isinstance(item, Sleep):
                sent = await step.sleep(item.duration, key=item.key, name=item.name)
            else:
                key, fn = item
                sent = await step(fn, key=key)

    return sync if flavour == "sync" else asynchronous


def _awaitable(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A transactional step written for a sync Connection or Session, on the async one
    (``run_sync`` hands it the sync Connection or Session underneath)."""

    async def call(resource: Any) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(resource)
        return await resource.run_sync(fn)

    return call


class Env:
    """A store of one kind (memory, PostgreSQL, SQLite) driven by one flavour."""

    def __init__(self, backend: str, flavour: str, store: Any, kv: Any, loop: Any) -> None:
        self.backend = backend
        self.flavour = flavour
        self.store = store  # what run() gets
        self.kv = kv  # the key/value store, sync calls
        self.loop = loop

    def run(self, body: Body, *, id: str, deps: Any = None, **options: Any) -> Any:
        wf = workflow(body, self.flavour)
        if self.flavour == "sync":
            return durable.run(deps, wf, id=id, store=self.store, **options)
        return self.loop.run_until_complete(
            durable.run_async(deps, wf, id=id, store=self.store, **options)
        )

    def helper(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.flavour == "sync":
            return getattr(durable, name)(self.store, *args, **kwargs)
        call = getattr(durable, f"{name}_async")(self.store, *args, **kwargs)
        return self.loop.run_until_complete(call)

    def row(self, workflow_id: str) -> str | None:
        return self.kv.get(f"workflow:state:{workflow_id}")
