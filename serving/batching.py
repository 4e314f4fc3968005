"""Adaptive batching: concurrent requests to one model merged into a single ``session.run``.

A request joins a queue; the first in line waits at most ``max_delay`` for others (or until
``max_rows`` rows are queued), then every queued request with the same non-batch shapes,
datatypes and requested outputs is concatenated along the first axis, run once, and split
back. Requests arriving while a run is underway queue up meanwhile, so under load batches form
without waiting at all. A merged run that fails is retried request by request, so one bad
request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.tensors import RequestError

__all__ = ["Batcher"]

Arrays = dict[str, np.ndarray[Any, Any]]
Results = list[np.ndarray[Any, Any]]
Runner = Callable[[Arrays, list[str]], Awaitable[Results]]


@dataclass(slots=True)
class _Pending:
    inputs: Arrays
    outputs: list[str]
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[Results]


class Batcher:
    """Queues requests for one model; ``run`` executes one (possibly merged) inference, and up
    to ``parallel`` of them run at once (the server's ``parallel_runs``)."""

    def __init__(
        self, run: Runner, max_rows: int, max_delay_seconds: float, parallel: int = 1
    ) -> None:
        self.run = run
        self.max_rows = max_rows
        self.max_delay = max_delay_seconds
        self.free_runs = asyncio.Semaphore(parallel)
        """Taken while a batch runs: the next batch forms while waiting for one, so under load
        batches grow instead of queueing."""
        self.running: set[asyncio.Task[None]] = set()
        self.queue: deque[_Pending] = deque()
        self.queued_rows = 0
        self.worker: asyncio.Task[None] | None = None
        self.full: asyncio.Future[None] | None = None

    async def infer(self, inputs: Arrays, outputs: list[str]) -> Results:
        rows = int(next(iter(inputs.values())).shape[0])
        if rows >= self.max_rows:
            return await self.run(inputs, outputs)
        loop = asyncio.get_running_loop()
        key = (
            tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items())),
            tuple(outputs),
        )
        pending = _Pending(inputs, outputs, rows, key, loop.create_future())
        self.queue.append(pending)
        self.queued_rows += rows
        if self.queued_rows >= self.max_rows and self.full is not None and not self.full.done():
            self.full.set_result(None)
        if self.worker is None:
            self.worker = loop.create_task(self._work())
        return await pending.future

    async def _work(self) -> None:
        """Form and run batches until the queue is empty."""
        loop = asyncio.get_running_loop()
        try:
            while self.queue:
                await self.free_runs.acquire()
                if self.queued_rows < self.max_rows and self.max_delay > 0:
                    self.full = loop.create_future()
                    timer = loop.call_later(self.max_delay, _resolve, self.full)
                    await self.full
                    timer.cancel()
                    self.full = None
                running = loop.create_task(self._run_batch(self._take()))
                self.running.add(running)
                running.add_done_callback(self._finished)
        finally:
            self.worker = None

    def _finished(self, running: asyncio.Task[None]) -> None:
        self.running.discard(running)
        self.free_runs.release()

    def _take(self) -> list[_Pending]:
        """The oldest request and every queued one compatible with it, up to ``max_rows``."""
        first = self.queue.popleft()
        batch, rows, kept = [first], first.rows, deque[_Pending]()
        while self.queue:
            item = self.queue.popleft()
            if item.key == first.key and rows + item.rows <= self.max_rows:
                batch.append(item)
                rows += item.rows
            else:
                kept.append(item)
        self.queue = kept
        self.queued_rows -= rows
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            await self._run_merged(batch)
        except Exception as exc:  # whatever failed, no request of the batch is left waiting
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)

    async def _run_merged(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            await _settle(batch[0], self.run(batch[0].inputs, batch[0].outputs))
            return
        merged = {
            name: np.concatenate([item.inputs[name] for item in batch]) for name in batch[0].inputs
        }
        total = sum(item.rows for item in batch)
        try:
            results = await self.run(merged, batch[0].outputs)
        except RequestError:
            results = None
        if results is None or any(
            result.ndim == 0 or result.shape[0] != total for result in results
        ):
            for (
                item
            ) in batch:  # one bad request (or a data-dependent output) must not fail the rest
                await _settle(item, self.run(item.inputs, item.outputs))
            return
        start = 0
        for item in batch:
            stop = start + item.rows
            if not item.future.done():
                item.future.set_result([result[start:stop] for result in results])
            start = stop


async def _settle(item: _Pending, work: Awaitable[Results]) -> None:
    try:
        result = await work
    except Exception as exc:
        if not item.future.done():
            item.future.set_exception(exc)
        return
    if not item.future.done():
        item.future.set_result(result)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
