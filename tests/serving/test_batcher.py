"""MicroBatcher: concurrent jobs share inference calls, each gets its own rows back, errors stay per batch."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import pytest
import torch

from cnnlab.serving.batcher import MicroBatcher


def run_apart(coroutine: Any) -> Any:
    """``asyncio.run`` in a thread of its own: Playwright's sync API (the browser tests) keeps an
    event loop running in the main thread for the whole session, where asyncio.run refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _recording(calls: list[int], fail: set[int] | None = None):
    """An 'inference' returning each image's first pixel as its score, slow enough to queue others."""

    def infer(images: torch.Tensor) -> torch.Tensor:
        assert threading.current_thread().name.startswith("cnnlab-inference")  # off the event loop
        calls.append(len(images))
        time.sleep(0.05)
        if fail and len(calls) in fail:
            raise RuntimeError("model failed")
        return images[:, 0, 0, :1].float()

    return infer


def _jobs(count: int) -> list[torch.Tensor]:
    """Job i holds i % 3 + 1 images whose first pixels are 10 * i + image number."""
    jobs = []
    for i in range(count):
        images = torch.zeros(i % 3 + 1, 1, 2, 2, dtype=torch.uint8)
        images[:, 0, 0, 0] = torch.arange(len(images)) + 10 * i
        jobs.append(images)
    return jobs


async def _score_all(batcher: MicroBatcher, jobs: list[torch.Tensor]) -> list:
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.score(job) for job in jobs), return_exceptions=True)
    finally:
        await batcher.stop()


@pytest.mark.parametrize("max_batch, most_calls", [(16, 4), (1, 12)])
def test_concurrent_jobs_are_batched_and_each_gets_its_own_rows(max_batch: int, most_calls: int) -> None:
    calls: list[int] = []
    jobs = _jobs(12)
    results = run_apart(_score_all(MicroBatcher(_recording(calls), max_batch, window_ms=20), jobs))
    for job, scored in zip(jobs, results):
        assert scored.probs[:, 0].tolist() == job[:, 0, 0, 0].float().tolist()
        assert scored.inference_ms >= 40 and scored.queue_ms >= 0
    assert sum(calls) == 24 and len(calls) <= most_calls
    if max_batch == 1:
        assert calls == [len(job) for job in jobs]  # one job at a time
    else:
        assert max(calls) > 3  # several jobs in one call


def test_a_failing_batch_fails_its_jobs_only() -> None:
    calls: list[int] = []
    batcher = MicroBatcher(_recording(calls, fail={1}), max_batch=64, window_ms=30)

    async def two_rounds() -> tuple[list, list]:
        await batcher.start()
        try:
            first = await asyncio.gather(*(batcher.score(job) for job in _jobs(3)), return_exceptions=True)
            second = await asyncio.gather(*(batcher.score(job) for job in _jobs(3)), return_exceptions=True)
            return first, second
        finally:
            await batcher.stop()

    first, second = run_apart(two_rounds())
    assert all(isinstance(r, RuntimeError) for r in first)
    assert not any(isinstance(r, Exception) for r in second) and batcher.stats()["batches"] == 1


class _Timed:
    """A model whose batch timing is given: (ms per image alone, ms per image in a batch)."""

    def __init__(self, single: float, batched: float) -> None:
        self.timing = (single, batched)

    def batch_timing(self, batch: int) -> tuple[float, float]:
        return self.timing


def test_auto_batching_is_on_only_when_a_batch_is_cheaper_per_image() -> None:
    from cnnlab.serving.server import choose_batching
    from cnnlab.serving.settings import ServeSettings

    auto = ServeSettings(max_batch=16)
    chosen, why = choose_batching(_Timed(45.0, 31.0), auto)  # PyTorch eager Lite0 on this CPU
    assert chosen.max_batch == 16 and "auto: 31.00 ms per image in a batch vs 45.00 ms alone" in why
    chosen, why = choose_batching(_Timed(18.0, 22.0), auto)  # ONNX Runtime Lite0: batches cost more
    assert chosen.max_batch == 1 and why.startswith("off (auto")
    assert choose_batching(_Timed(18.0, 22.0), ServeSettings(batching="on"))[0].max_batch == 16
    assert choose_batching(_Timed(45.0, 5.0), ServeSettings(batching="off"))[0].max_batch == 1


def test_the_queue_is_bounded_and_a_request_past_its_time_limit_is_not_scored() -> None:
    """Places are taken before the work is queued and freed when it starts; a job cancelled while
    queued (its request's time limit) is dropped unscored and frees its place."""
    calls: list[int] = []
    batcher = MicroBatcher(_recording(calls), max_batch=1, window_ms=0, max_queue=2)

    async def scenario() -> tuple[list, list[int]]:
        await batcher.start()
        try:
            tickets = [batcher.admit() for _ in range(3)]
            assert tickets[2] is None and batcher.rejected_busy == 1 and batcher.waiting == 2
            jobs = _jobs(3)
            running = asyncio.create_task(batcher.score(jobs[0], tickets[0]))
            await asyncio.sleep(0.02)  # the first job is in the model: its place is free again
            seen = [batcher.waiting]
            late = asyncio.create_task(batcher.score(jobs[1], tickets[1]))
            await asyncio.sleep(0.005)
            late.cancel()  # what asyncio.timeout does to a request waiting past --request-timeout
            third = batcher.admit()
            assert third is not None
            last = await batcher.score(jobs[2], third)
            results = await asyncio.gather(running, late, return_exceptions=True)
            seen.append(batcher.waiting)
            return [*results, last], seen
        finally:
            await batcher.stop()

    results, seen = run_apart(scenario())
    assert seen == [1, 0] and batcher.peak_waiting == 2
    assert results[0].probs[:, 0].tolist() == [0.0] and isinstance(results[1], asyncio.CancelledError)
    assert calls == [1, 3]  # the cancelled job (2 images) never reached the model
    assert batcher.drain_seconds() > 0  # from the time the model took: the 503's Retry-After
