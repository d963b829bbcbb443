"""The lease heartbeat: no thread for a run shorter than an interval; one per due run."""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Any

import pytest

from sqlalchemy_awaitly import durable
from sqlalchemy_awaitly.durable import MemoryStore
from sqlalchemy_awaitly.durable.heartbeat import Heartbeats, heartbeats
from sqlalchemy_awaitly.durable.requests import Renew
from sqlalchemy_awaitly.durable.state import Lease

WAIT = 10.0  # a bound on every wait below: a bug fails the test instead of hanging it


def renewal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "awaitly-lease"]


def lease(interval: float) -> Lease:
    return Lease("lock:x", "token", ttl=interval * 50, interval=interval)


def test_a_short_run_starts_no_renewal_thread() -> None:
    seen: list[int] = []

    def body(step: Any, deps: Any) -> int:
        seen.append(len(renewal_threads()))
        return int(step(lambda: 1, key="one"))

    before = len(renewal_threads())
    assert durable.run(None, body, id="short", store=MemoryStore()).ok
    assert seen == [before] and len(renewal_threads()) == before


def test_a_due_run_renews_on_its_own_thread_until_stopped() -> None:
    renewed = threading.Semaphore(0)
    threads: set[str] = set()

    def renew(r: Renew) -> bool:
        threads.add(threading.current_thread().name)
        renewed.release()
        return True

    held = lease(0.02)
    pending = heartbeats.start(renew, held)
    try:
        for _ in range(3):
            assert renewed.acquire(timeout=WAIT)
    finally:
        heartbeats.stop(pending)
    assert threads == {"awaitly-lease"} and not held.lost
    assert pending.thread is not None and not pending.thread._thread.is_alive()


def test_a_renewal_hanging_on_one_run_does_not_delay_another() -> None:
    release = threading.Event()
    other = threading.Semaphore(0)

    def hangs(r: Renew) -> bool:
        release.wait(WAIT)
        return True

    def answers(r: Renew) -> bool:
        other.release()
        return True

    stuck = heartbeats.start(hangs, lease(0.01))
    fine = heartbeats.start(answers, lease(0.03))
    try:
        for _ in range(3):
            assert other.acquire(timeout=WAIT), "the stuck renewal held up another run's"
    finally:
        release.set()
        heartbeats.stop(stuck)
        heartbeats.stop(fine)


def test_a_run_stopped_before_its_renewal_is_due_is_never_renewed() -> None:
    calls: list[Renew] = []
    pending = heartbeats.start(calls.append, lease(0.05))
    heartbeats.stop(pending)
    ran = threading.Semaphore(0)
    marker = heartbeats.start(lambda r: ran.release(), lease(0.1))  # due after the first
    try:
        assert ran.acquire(timeout=WAIT)
    finally:
        heartbeats.stop(marker)
    assert calls == [] and pending.thread is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_renews_its_own_runs() -> None:
    started = heartbeats.start(lambda r: True, lease(30.0))  # the parent's timer is running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's timer thread did not come along
        try:
            done = threading.Event()
            pending = heartbeats.start(lambda r: done.set() or True, lease(0.02))
            ok = done.wait(WAIT)
            heartbeats.stop(pending)
            os.write(write, b"renewed" if ok else b"never")
        finally:
            os._exit(0)
    try:
        os.close(write)
        ready, _, _ = select.select([read], [], [], WAIT)
        answer = os.read(read, 16) if ready else b"timed out"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
        heartbeats.stop(started)
    assert answer == b"renewed"


def test_a_run_longer_than_an_interval_keeps_its_lease() -> None:
    store = MemoryStore()

    def body(step: Any, deps: Any) -> str:
        deadline = time.monotonic() + WAIT
        while store.get("workflow:lock:long") is not None and len(renewal_threads()) == 0:
            assert time.monotonic() < deadline, "no renewal thread started"
            time.sleep(0.01)
        return str(step(lambda: "done", key="only"))

    result = durable.run(None, body, id="long", store=store, lease_ttl=1.0, heartbeat_interval=0.05)
    assert result.ok and result.value == "done"


def test_the_timer_ends_once_no_run_waits() -> None:
    timer = Heartbeats(idle=0.05)
    first = timer.start(lambda r: True, lease(30.0))
    second = timer.start(lambda r: True, lease(30.0))
    timer.stop(first)
    assert timer.running  # a run still waits
    timer.stop(second)
    deadline = time.monotonic() + WAIT
    while timer.running:
        assert time.monotonic() < deadline, "the idle timer never ended"
        time.sleep(0.01)
    renewed = threading.Event()
    again = timer.start(lambda r: renewed.set() or True, lease(0.02))  # a new timer
    try:
        assert renewed.wait(WAIT)
    finally:
        timer.stop(again)


def test_runs_wake_the_timer_only_when_due_sooner_than_it_wakes() -> None:
    """Waking the timer hands it the GIL: at each run's start and end, that cost a
    10-step run 5% of its wall time (``benchmarks/bench_drivers.py``, row 6)."""
    timer = Heartbeats(idle=2.0)
    woken: list[int] = []
    notify = timer._due.notify
    timer._due.notify = lambda n=1: woken.append(n) or notify(n)  # type: ignore[method-assign]
    timer.stop(timer.start(lambda r: True, lease(30.0)))  # the timer, now waiting to idle
    deadline = time.monotonic() + WAIT
    while True:
        with timer._due:
            if timer._wakes <= time.monotonic() + 2.0:
                break
        assert time.monotonic() < deadline, "the timer never went back to idling"
        time.sleep(0.001)
    before = len(woken)
    for _ in range(100):  # runs ending well before the timer wakes by itself
        timer.stop(timer.start(lambda r: True, lease(30.0)))
    assert len(woken) == before
    renewed = threading.Event()
    soon = timer.start(lambda r: renewed.set() or True, lease(0.02))  # due before it wakes
    try:
        assert renewed.wait(WAIT)
    finally:
        timer.stop(soon)
    assert len(woken) > before
