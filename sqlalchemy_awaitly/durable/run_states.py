"""What state a stored run is in, told from its rows alone: the one model for every listing.

A run leaves up to three kinds of row: its state (``<state prefix><id>``),
its lease (``<lock prefix><id>``, renewed by a heartbeat while it runs),
and an idempotency record. awaitly always writes ``execution.status:
"running"``, so the stored status says nothing; the state is read from which
rows exist and what they hold:

============  ===============================================================
``running``   a live lease holds the id (whatever the state row holds)
``failed``    no live lease, and a step's stored failure ends every rerun
              until ``retry_step`` clears it
``cancelled`` no live lease, and the row records a cancellation
              (``CancelToken``): a ``run`` with this id is refused until
              ``uncancel`` clears it
``crashed``   no live lease and no stored failure: the process ended before
              the run did (killed, or its lease expired); the next ``run``
              with this id resumes it
``corrupt``   no live lease, and the state row cannot be read
``completed`` an idempotency record with ``finalResult``: the run finished
              (its state row is gone)
============  ===============================================================

A run started with ``allow_concurrent=True`` takes no lease, so it shows as
``crashed`` while it runs.
"""

from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    """A stored run's state (see the module's table); its value is the word shown."""

    RUNNING = "running"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    CORRUPT = "corrupt"
    COMPLETED = "completed"

    def __str__(self) -> str:
        return self.value


def state_of(*, leased: bool, corrupt: bool, failed: bool, cancelled: bool = False) -> RunState:
    """The state of a run with a state row, from what its rows say."""
    if leased:
        return RunState.RUNNING
    if corrupt:
        return RunState.CORRUPT
    if cancelled:
        return RunState.CANCELLED
    return RunState.FAILED if failed else RunState.CRASHED
