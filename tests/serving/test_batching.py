"""The adaptive batcher in-process: merging, splitting, and isolating a bad request."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from serving.batching import Batcher
from serving.tensors import RequestError

Arrays = dict[str, np.ndarray[Any, Any]]


class DoublingModel:
    """Doubles ``x``; any row holding a negative value makes the whole run fail, like a model
    rejecting an out-of-range token id."""

    def __init__(self) -> None:
        self.runs: list[int] = []

    async def run(self, inputs: Arrays, outputs: list[str]) -> list[np.ndarray[Any, Any]]:
        await asyncio.sleep(0)
        self.runs.append(inputs["x"].shape[0])
        if (inputs["x"] < 0).any():
            raise RequestError(400, "negative input")
        return [inputs["x"] * 2 for _ in outputs]


def _x(*rows: float, width: int = 2) -> Arrays:
    return {"x": np.array([[row] * width for row in rows], dtype=np.float32)}


async def test_concurrent_requests_share_one_run_and_get_their_own_rows() -> None:
    model = DoublingModel()
    batcher = Batcher(model.run, max_rows=16, max_delay_seconds=0.05)
    results = await asyncio.gather(*(batcher.infer(_x(i, i + 0.5), ["y"]) for i in range(5)))
    assert model.runs == [10]
    for i, (output,) in enumerate(results):
        assert output.tolist() == [[2 * i] * 2, [2 * i + 1] * 2]


async def test_max_rows_caps_a_batch_and_big_requests_run_alone() -> None:
    model = DoublingModel()
    batcher = Batcher(model.run, max_rows=4, max_delay_seconds=0.05)
    await asyncio.gather(
        *(batcher.infer(_x(1), ["y"]) for _ in range(6)), batcher.infer(_x(*range(5)), ["y"])
    )
    assert sorted(model.runs) == [2, 4, 5]


async def test_incompatible_shapes_and_outputs_are_not_merged() -> None:
    model = DoublingModel()
    batcher = Batcher(model.run, max_rows=16, max_delay_seconds=0.05)
    await asyncio.gather(
        batcher.infer(_x(1), ["y"]),
        batcher.infer(_x(1, width=3), ["y"]),
        batcher.infer(_x(1), ["y", "z"]),
    )
    assert model.runs == [1, 1, 1]


async def test_a_failing_request_does_not_fail_its_batch_neighbours() -> None:
    model = DoublingModel()
    batcher = Batcher(model.run, max_rows=16, max_delay_seconds=0.05)
    good, bad, other = await asyncio.gather(
        batcher.infer(_x(1), ["y"]),
        batcher.infer(_x(-1), ["y"]),
        batcher.infer(_x(3), ["y"]),
        return_exceptions=True,
    )
    assert isinstance(bad, RequestError)
    assert not isinstance(good, BaseException)
    assert not isinstance(other, BaseException)
    assert good[0].tolist() == [[2, 2]]
    assert other[0].tolist() == [[6, 6]]
    assert model.runs == [3, 1, 1, 1]


async def test_zero_delay_still_merges_what_queued_during_a_run() -> None:
    model = DoublingModel()
    batcher = Batcher(model.run, max_rows=16, max_delay_seconds=0.0)
    await asyncio.gather(*(batcher.infer(_x(i), ["y"]) for i in range(4)))
    assert sum(model.runs) == 4
    assert len(model.runs) < 4


@pytest.mark.parametrize("delay", [0.0, 0.01])
async def test_the_worker_stops_when_idle_and_restarts(delay: float) -> None:
    batcher = Batcher(DoublingModel().run, max_rows=8, max_delay_seconds=delay)
    await batcher.infer(_x(1), ["y"])
    await asyncio.sleep(0)
    assert batcher.worker is None
    assert (await batcher.infer(_x(2), ["y"]))[0].tolist() == [[4, 4]]


class GatedModel:
    """Counts the runs going on at once; each run waits until the test opens the gate."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.gate = asyncio.Event()

    async def run(self, inputs: Arrays, outputs: list[str]) -> list[np.ndarray[Any, Any]]:
        self.running += 1
        self.most = max(self.most, self.running)
        await self.gate.wait()
        self.running -= 1
        return [inputs["x"] for _ in outputs]


@pytest.mark.parametrize("parallel", [1, 2, 3])
async def test_batches_run_at_most_parallel_at_once(parallel: int) -> None:
    model = GatedModel()
    batcher = Batcher(model.run, max_rows=2, max_delay_seconds=0.0, parallel=parallel)
    answers = asyncio.gather(*(batcher.infer(_x(i), ["y"]) for i in range(10)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert model.running == model.most == parallel
    model.gate.set()
    results = await answers
    assert [result[0][0][0] for result in results] == list(range(10))
    assert model.most == parallel


async def test_an_unexpected_failure_answers_every_request_of_the_batch() -> None:
    async def broken(inputs: Arrays, outputs: list[str]) -> list[np.ndarray[Any, Any]]:
        raise RuntimeError("the session is gone")

    batcher = Batcher(broken, max_rows=8, max_delay_seconds=0.01)
    results = await asyncio.gather(
        *(batcher.infer(_x(i), ["y"]) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, RuntimeError) for result in results)
