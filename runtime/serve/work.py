"""The worker process's work queue: decoding and inference never run on the event loop.

Always in the worker process's decoding thread, one request at a time, the others waiting in a
bounded queue; when it is full, ``Busy`` (503 with Retry-After) at once. So concurrent uploads
queue instead of multiplying memory, and /healthz and the other connections are served meanwhile.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from runtime.serve.errors import Busy

T = TypeVar("T")


class WorkQueue:
    """Runs the slow part of requests (decoding, preprocessing, inference) in ``threads`` worker
    threads of its own, first come first served. At most ``max_waiting`` more requests wait their
    turn, holding at most ``max_bytes`` of bodies between them (one request is always let in);
    beyond that, ``Busy`` at once.

    A plain queue and ``call_soon_threadsafe``: the hop costs about a third of anyio.to_thread's
    with a CapacityLimiter, which matters for 28x28 PNGs answered in well under a millisecond."""

    def __init__(self, threads: int, max_waiting: int, max_bytes: int):
        self.threads, self.max_waiting, self.max_bytes = threads, max_waiting, max_bytes
        self.pending = self.pending_bytes = 0  # running or waiting; changed on the event loop only
        self.reading = 0  # body bytes of uploads still arriving (read_body); on the event loop only
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.workers: list[threading.Thread] = []

    def check(self, size: int = 0) -> None:
        """``Busy`` when a request of ``size`` body bytes would not find room in the queue."""
        if self.pending and (self.pending >= self.threads + self.max_waiting
                             or self.pending_bytes + size > self.max_bytes):
            raise Busy(f"busy: {self.pending} requests are being decoded or waiting; try again shortly")

    async def run(self, size: int, work: Callable[[], T]) -> T:
        """``work()`` in a worker thread when its turn comes; the event loop serves others meanwhile."""
        self.check(size)
        if not self.workers:  # started in the process (the uvicorn worker) that uses them
            self.workers = [threading.Thread(target=self._serve, name=f"decode-{i}", daemon=True)
                            for i in range(self.threads)]
            for worker in self.workers:
                worker.start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending += 1
        self.pending_bytes += size
        try:
            self.jobs.put((loop, future, work))
            return await future
        finally:
            self.pending -= 1
            self.pending_bytes -= size

    def _serve(self) -> None:
        while True:
            self._do(*self.jobs.get())  # a call, so that nothing of a request outlives it in this thread

    @staticmethod
    def _do(loop: asyncio.AbstractEventLoop, future: asyncio.Future, work: Callable[[], object]) -> None:
        if future.cancelled():  # its request is gone
            return
        try:
            outcome = (work(), None)
        except BaseException as e:  # handed to the request, which raises it
            outcome = (None, e)
        del work  # the request's bytes
        try:
            loop.call_soon_threadsafe(_settle, future, *outcome)
        except RuntimeError:  # the loop is closed (shutting down): nobody waits for the answer
            pass
        del future, outcome  # no cycle (error -> traceback -> this frame -> future -> error) keeps pixels alive


def _settle(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if not future.done():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
