"""A bounded pool for inference with a bounded queue in front of it; beyond both, refuse at once.

Inference is CPU/GPU-bound and synchronous: it runs in worker threads (``workers`` at a time) off the event
loop. At most ``queue_size`` more requests wait for a worker; another request gets :class:`~service.api.problems.Busy`
(HTTP 503 with Retry-After) immediately, before its body is read, instead of piling up.

The job runner's fields go through the same gate (:meth:`InferenceGate.run_waiting`, called from its thread
through the event loop): they wait in the same first-come queue and hold a place in it, so a job and requests
share the workers instead of inferring side by side and slowing each other down; they are never refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread

from service.api.problems import Busy

T = TypeVar("T")
P = ParamSpec("P")


class InferenceGate:
    """Admission control and the worker pool. Used from one event loop, so plain counters suffice."""

    def __init__(self, workers: int, queue_size: int, retry_after_s: int) -> None:
        self.workers, self.queue_size, self.retry_after_s = workers, queue_size, retry_after_s
        self.limiter = anyio.CapacityLimiter(workers)
        self._threads = anyio.CapacityLimiter(workers)
        self.admitted = 0
        self.running = 0

    @property
    def waiting(self) -> int:
        """Requests admitted but not yet on a worker (reading their upload, or queued)."""
        return self.admitted - self.running

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a place for one request, or raise :class:`~service.api.problems.Busy` when there is none."""
        if self.admitted >= self.workers + self.queue_size:
            raise Busy(
                "the service is busy: every inference worker is in use and the queue is full", self.retry_after_s
            )
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker thread once one is free (typed: a wrong argument is a type
        error)."""
        async with self.limiter:  # wait for a worker
            self.running += 1
            try:
                # the threads' own limiter has the same size, so it never makes an admitted task wait again
                return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._threads)
            finally:
                self.running -= 1

    async def run_waiting(self, fn: Callable[[], T]) -> T:
        """Hold a place in the queue even when it is full (background work, never refused), then run ``fn()`` on
        a worker thread once one is free."""
        self.admitted += 1
        try:
            return await self.run(fn)
        finally:
            self.admitted -= 1
