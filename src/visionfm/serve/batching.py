"""Dynamic batching: concurrent requests collected for a few milliseconds into one forward pass, off the event loop.

One worker thread owns the models (so at most one forward runs at a time and attention hooks never see another
request's pass). Requests go into a bounded queue; a full queue is refused at once (:class:`Overloaded` -> 503)
rather than letting latency grow without bound. The worker takes the first waiting job, then keeps collecting for
``wait_ms`` or until ``max_batch`` images, groups what it has by (job kind, input shape), runs each group as one
batch and hands every caller its own row. A job whose caller gave up (timeout) before it ran is skipped.

Requests announce themselves while their uploads are still being decoded (:meth:`DynamicBatcher.arriving`), and a
batch being collected keeps waiting for announced jobs, up to ``hold_ms`` after its first job: otherwise, with
closed-loop clients, the batch leaves with the jobs that happened to be queued and the clients split into cohorts
that never share a forward (measured: mean batch 4.0 of 8 at 8 clients, 7.7-7.9 when the batch waits for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

__all__ = ["BatchFn", "DynamicBatcher", "Job", "Overloaded"]

log = logging.getLogger(__name__)

#: ``fn(payloads) -> results``: one result per payload, computed as one batch.
BatchFn = Callable[[Sequence[Any]], Sequence[Any]]


class Overloaded(RuntimeError):
    """The request queue is full: the service is busy (HTTP 503)."""


@dataclass
class Job:
    """One request's work: the batch function, the grouping key (same key = may share a forward), its payload."""

    fn: BatchFn
    key: Hashable
    payload: Any
    future: Future
    label: str = ""


class DynamicBatcher:
    """Collect jobs for ``wait_ms`` into batches of at most ``max_batch``, run them on one worker thread.

    Args:
        max_batch: most payloads per batch function call (1: every request alone).
        wait_ms: collection window after the first job of a batch arrives.
        queue_size: jobs waiting before :meth:`submit` raises :class:`Overloaded`.
        on_batch: called after every batch with (label, size, seconds) (metrics).
        hold_ms: how long after its first job, at most, a batch waits for jobs announced by :meth:`arriving`.
    """

    def __init__(
        self,
        max_batch: int = 8,
        wait_ms: float = 5.0,
        queue_size: int = 64,
        on_batch: Callable[[str, int, float], None] | None = None,
        hold_ms: float = 0.0,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or wait_ms < 0 or hold_ms < 0:
            raise ValueError("max_batch and queue_size must be >= 1, wait_ms and hold_ms >= 0")
        self.max_batch, self.wait, self.hold = max_batch, wait_ms / 1000.0, hold_ms / 1000.0
        self._incoming, self._lock = 0, threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._on_batch = on_batch
        self._thread = threading.Thread(target=self._loop, name="visionfm-batcher", daemon=True)
        self._stopped = threading.Event()
        self._thread.start()

    def depth(self) -> int:
        """Jobs waiting."""
        return self._queue.qsize()

    def incoming(self) -> int:
        """Jobs announced (being decoded) and not yet submitted."""
        return self._incoming

    @contextlib.contextmanager
    def arriving(self, n: int = 1):
        """Announce ``n`` jobs whose inputs are being prepared; a batch being collected waits for them (up to
        ``hold_ms``). Yields a function that withdraws the announcement: call it right before submitting the jobs
        (leaving the block withdraws whatever is left, e.g. after a bad upload)."""
        left = [n]
        with self._lock:
            self._incoming += n

        def arrived() -> None:
            with self._lock:
                self._incoming -= left[0]
                left[0] = 0

        try:
            yield arrived
        finally:
            arrived()

    def submit_nowait(self, fn: BatchFn, key: Hashable, payload: Any, label: str = "") -> Future:
        """Queue one job; its future gets the result.

        Raises:
            Overloaded: the queue is full, or the batcher is stopped.
        """
        if self._stopped.is_set():
            raise Overloaded("the service is shutting down")
        fut: Future = Future()
        try:
            self._queue.put_nowait(Job(fn, key, payload, fut, label))
        except queue.Full:
            raise Overloaded(f"the service is busy ({self._queue.maxsize} requests waiting); retry later") from None
        return fut

    async def submit(self, fn: BatchFn, key: Hashable, payload: Any, label: str = "") -> Any:
        """Queue one job and wait for its result without blocking the event loop."""
        fut = self.submit_nowait(fn, key, payload, label)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.cancel()  # the worker skips a job whose caller is gone
            raise

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after the jobs already queued."""
        if not self._stopped.is_set():
            self._stopped.set()
            with contextlib.suppress(queue.Full):  # a full queue: the worker drains it and sees the stop flag
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)

    # -- worker -------------------------------------------------------------------------------------------------
    def _timeout(self, deadline: float, hold: float) -> float | None:
        """Seconds to wait for the next job, or None to stop collecting."""
        now = time.perf_counter()
        if now < deadline:
            return deadline - now
        if self._incoming > 0 and now < hold:  # announced jobs are coming: poll, as they may be withdrawn
            return min(hold - now, 0.001)
        return None

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        jobs, stop = [first], False
        start = time.perf_counter()
        deadline, hold = start + self.wait, start + max(self.wait, self.hold)
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                timeout = self._timeout(deadline, hold)
                if timeout is None:
                    break
                try:
                    job = self._queue.get(timeout=timeout)
                except queue.Empty:
                    continue
            if job is None:
                stop = True
                break
            jobs.append(job)
        return jobs, stop

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                if job.future.set_running_or_notify_cancel():
                    # the function itself, not id(): bound methods are new objects at every access but compare
                    # (and hash) equal when they bind the same method to the same model
                    groups.setdefault((job.fn, job.key), []).append(job)
            for group in groups.values():
                self._run(group)
            if stop:
                return

    def _run(self, group: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            results = list(group[0].fn([j.payload for j in group]))
            if len(results) != len(group):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(group)} inputs")
        except BaseException as e:  # the worker must survive anything a model raises
            log.exception("batch of %d failed", len(group))
            for j in group:
                j.future.set_exception(e)
            return
        for j, r in zip(group, results):
            j.future.set_result(r)
        if self._on_batch is not None:
            self._on_batch(group[0].label, len(group), time.perf_counter() - t0)
