"""Micro-batching: images of concurrent requests scored in one call, on one thread off the event loop.

A request puts its images on a queue and awaits its result. One collector task takes the first
waiting job, then whatever else arrives within the window (or is already queued because the
previous batch was still running) up to ``max_batch`` images, and runs the batch on a single
inference thread. The event loop keeps accepting and decoding requests meanwhile. A model scores
a batch of 16 in much less than 16 times a single image's time (fewer calls, wider kernels),
which is where the throughput comes from; ``max_batch=1`` serves one image at a time.

Back-pressure: a request first asks for a ``Ticket`` (``admit``), a place among the requests waiting
for the model, before its upload is even read; with ``max_queue`` places taken it is refused at once
(the app answers 503), so a burst costs memory and latency for at most ``max_queue`` requests. The
place is freed when the request's images go into a batch (or its Grad-CAM starts), or when it ends
without getting there (a bad upload, a time limit).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

T = TypeVar("T")
Infer = Callable[[torch.Tensor], torch.Tensor]  # uint8 (N, C, H, W) -> (N, classes) probabilities


@dataclass
class Scored:
    """One job's probabilities and how its time was spent (milliseconds)."""

    probs: torch.Tensor
    queue_ms: float
    inference_ms: float
    batch_images: int  # images in the batch this job was scored with


class Ticket:
    """One request's place among those waiting for the model; ``release`` is safe to call twice."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher = batcher
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._batcher.waiting -= 1


@dataclass
class _Job:
    images: torch.Tensor
    future: asyncio.Future
    ticket: Ticket | None = None
    queued: float = field(default_factory=time.perf_counter)

    def started(self) -> None:
        if self.ticket is not None:
            self.ticket.release()


class MicroBatcher:
    """Groups jobs for ``infer``; ``start`` inside the running loop, ``stop`` after the last request."""

    def __init__(self, infer: Infer, max_batch: int, window_ms: float, max_queue: int | None = None) -> None:
        self.infer = infer
        self.max_batch = max(1, max_batch)
        self.window = max(0.0, window_ms) / 1000
        self.max_queue = max_queue  # None: no bound
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="cnnlab-inference")
        self.batches = 0
        self.images = 0
        self.waiting = 0  # admitted requests whose work has not started
        self.peak_waiting = 0
        self.rejected_busy = 0
        self._busy_s = 0.0  # time the inference thread spent on jobs, and how many: the Retry-After estimate
        self._jobs_done = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        """Finishes the queued jobs, then ends the collector and the inference thread."""
        if self._queue is not None:
            while not self._queue.empty():
                await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    def admit(self) -> Ticket | None:
        """A place among the requests waiting for the model, or None (counted) when ``max_queue`` are taken."""
        if self.max_queue is not None and self.waiting >= self.max_queue:
            self.rejected_busy += 1
            return None
        self.waiting += 1
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        return Ticket(self)

    def drain_seconds(self) -> float:
        """About how long the requests now waiting will take: the mean time per request so far, times them."""
        per_job = self._busy_s / self._jobs_done if self._jobs_done else 0.0
        return (self.waiting + 1) * per_job

    async def score(self, images: torch.Tensor, ticket: Ticket | None = None) -> Scored:
        """The probabilities of uint8 (N, C, H, W) ``images``, scored with other requests' images.

        ``ticket`` is released when the images go into a batch. Cancelled (a time limit) while queued,
        the job is dropped unscored; while its batch runs, the result is dropped.
        """
        assert self._queue is not None, "MicroBatcher.start() was not awaited"
        job = _Job(images, asyncio.get_running_loop().create_future(), ticket)
        await self._queue.put(job)
        return await job.future

    async def run_alone(self, work: Callable[[], T], ticket: Ticket | None = None) -> T:
        """``work()`` on the inference thread between batches (e.g. a Grad-CAM pass), never beside one;
        ``ticket`` is released when it starts."""
        loop = asyncio.get_running_loop()

        def timed() -> T:
            if ticket is not None:
                loop.call_soon_threadsafe(ticket.release)  # the counter belongs to the event loop's thread
            started = time.perf_counter()
            try:
                return work()
            finally:
                loop.call_soon_threadsafe(self._account, time.perf_counter() - started, 1)

        return await loop.run_in_executor(self.executor, timed)

    def _account(self, seconds: float, jobs: int) -> None:
        self._busy_s += seconds
        self._jobs_done += jobs

    async def _next_live(self) -> _Job:
        """The next queued job whose request still waits (one past its time limit is dropped unscored)."""
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            job.started()
            if not job.future.done():
                return job

    async def _next_batch(self) -> list[_Job]:
        assert self._queue is not None
        jobs = [await self._next_live()]
        count = len(jobs[0].images)
        deadline = time.perf_counter() + self.window
        while count < self.max_batch:
            try:
                job = self._queue.get_nowait()  # queued while the last batch ran: no waiting
            except asyncio.QueueEmpty:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._next_live(), left)
                except TimeoutError:
                    break
            job.started()
            if job.future.done():
                continue
            jobs.append(job)
            count += len(job.images)
        return jobs

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            started = time.perf_counter()
            images = torch.cat([job.images for job in jobs]) if len(jobs) > 1 else jobs[0].images
            try:
                probs = await loop.run_in_executor(self.executor, self.infer, images)
            except Exception as exc:  # noqa: BLE001  every waiting request gets the error, the server goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            took = (time.perf_counter() - started) * 1000
            self._account(took / 1000, len(jobs))
            self.batches += 1
            self.images += len(images)
            start = 0
            for job in jobs:
                if not job.future.done():  # its client may have gone away
                    job.future.set_result(
                        Scored(probs[start : start + len(job.images)], (started - job.queued) * 1000, took, len(images))
                    )
                start += len(job.images)

    def stats(self) -> dict[str, Any]:
        return {
            "max_batch": self.max_batch,
            "window_ms": self.window * 1000,
            "batches": self.batches,
            "images": self.images,
            "mean_batch": round(self.images / self.batches, 2) if self.batches else None,
        }
