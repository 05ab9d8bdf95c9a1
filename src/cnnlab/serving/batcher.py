"""Micro-batching: images of concurrent requests scored in one call, on one thread off the event loop.

A request puts its images on a queue and awaits its result. One collector task takes the first
waiting job, then whatever else arrives within the window (or is already queued because the
previous batch was still running) up to ``max_batch`` images, and runs the batch on a single
inference thread. The event loop keeps accepting and decoding requests meanwhile. A model scores
a batch of 16 in much less than 16 times a single image's time (fewer calls, wider kernels),
which is where the throughput comes from; ``max_batch=1`` serves one image at a time.
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


@dataclass
class _Job:
    images: torch.Tensor
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Groups jobs for ``infer``; ``start`` inside the running loop, ``stop`` after the last request."""

    def __init__(self, infer: Infer, max_batch: int, window_ms: float) -> None:
        self.infer = infer
        self.max_batch = max(1, max_batch)
        self.window = max(0.0, window_ms) / 1000
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="cnnlab-inference")
        self.batches = 0
        self.images = 0
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

    async def score(self, images: torch.Tensor) -> Scored:
        """The probabilities of uint8 (N, C, H, W) ``images``, scored with other requests' images."""
        assert self._queue is not None, "MicroBatcher.start() was not awaited"
        job = _Job(images, asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.future

    async def run_alone(self, work: Callable[[], T]) -> T:
        """``work()`` on the inference thread between batches (e.g. a Grad-CAM pass), never beside one."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    async def _next_batch(self) -> list[_Job]:
        assert self._queue is not None
        jobs = [await self._queue.get()]
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
                    job = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
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
            self.batches += 1
            self.images += len(images)
            start = 0
            for job in jobs:
                if not job.future.done():  # its client may have gone away
                    job.future.set_result(Scored(probs[start : start + len(job.images)],
                                                 (started - job.queued) * 1000, took, len(images)))
                start += len(job.images)

    def stats(self) -> dict[str, Any]:
        return {"max_batch": self.max_batch, "window_ms": self.window * 1000, "batches": self.batches,
                "images": self.images, "mean_batch": round(self.images / self.batches, 2) if self.batches else None}
