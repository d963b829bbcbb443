"""Stopping a process's runs for a shutdown: not a cancellation.

A worker asked to stop (SIGTERM) lets each running step finish and checkpoint,
then ends the run before its next step with :class:`WorkflowStopped`. Nothing
is written for it: the lease is released and the row stays as a crash leaves
it, so the next recovery (or ``durable.run`` with the id) resumes the run where
it stopped. A cancellation, by contrast, is recorded and refuses resumption.
"""

from __future__ import annotations

import threading


class StopToken:
    """Asks the runs given it to end before their next step: ``stop()``, from any
    thread (a signal handler's, a worker's)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def stop(self) -> None:
        self._event.set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()
