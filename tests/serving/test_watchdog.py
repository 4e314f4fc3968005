"""Runs that would hold up the event loop, or outlive the request timeout, are stopped."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import serving.app
from serving.app import InferenceApp, settled
from serving.config import load_config
from serving.http import Request, Response
from serving.metrics import Metrics
from serving.model import load_model
from serving.watchdog import RunWatchdog
from tests.serving.support import build_chain


class _Run:
    terminate = False


def _wait_for(condition: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return bool(condition())


@pytest.fixture
def watchdog() -> Iterator[RunWatchdog]:
    watching = RunWatchdog(0.05)
    yield watching
    watching.close()


def test_a_run_past_the_limit_is_stopped(watchdog: RunWatchdog) -> None:
    run = _Run()
    watchdog.watch(run)
    assert _wait_for(lambda: run.terminate)
    watchdog.done()


def test_runs_done_in_time_are_left_alone_and_the_idle_thread_sleeps(
    watchdog: RunWatchdog,
) -> None:
    runs = [_Run() for _ in range(20)]
    for run in runs:
        watchdog.watch(run)
        time.sleep(0.01)
        watchdog.done()
    time.sleep(0.1)
    assert not any(run.terminate for run in runs)
    assert _wait_for(lambda: not watchdog.awake.is_set())  # blocked, not polling
    late = _Run()
    watchdog.watch(late)  # woken again by the next run
    assert _wait_for(lambda: late.terminate)


def _request(size: int) -> Request:
    x = np.eye(size, dtype=np.float32)
    body = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [size, size], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
    ).encode()
    return Request("POST", "/v2/models/chain/infer", "", {}, body)


def _identity_rows(response: Response) -> list[list[float]]:
    output = json.loads(response.body)["outputs"][0]
    rows: list[list[float]] = np.array(output["data"]).reshape(output["shape"]).tolist()
    return rows


async def test_an_outsized_run_on_the_loop_moves_to_the_inference_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving.app, "INLINE_RUN_LIMIT", 0.05)
    chain = build_chain(tmp_path / "chain.onnx", matmuls=200)
    config = load_config({"model": [str(chain)], "threads": 1})
    with ThreadPoolExecutor(1) as executor:
        app = InferenceApp(config, Metrics(), executor)
        app.add_model(load_model(config.models[0], config))
        for _ in range(3):  # timed, short: from now on they run on the loop
            assert (await settled(app.handle(_request(4)))).status == 200
        assert isinstance(app.handle(_request(4)), Response)
        started = time.perf_counter()
        answer = app.handle(_request(600))  # ~0.6 s: stopped on the loop after 0.05 s
        held = time.perf_counter() - started
        assert not isinstance(answer, Response)
        response = await answer
        app.watchdog.close()
    assert held < 0.3
    assert response.status == 200
    assert _identity_rows(response) == np.eye(600).tolist()


async def test_a_timed_out_run_is_stopped_and_frees_the_inference_thread(tmp_path: Path) -> None:
    chain = build_chain(tmp_path / "chain.onnx", matmuls=200)  # short steps: stops promptly
    config = load_config({"model": [str(chain)], "threads": 1, "request_timeout": 0.1})
    with ThreadPoolExecutor(1) as executor:
        app = InferenceApp(config, Metrics(), executor)
        app.add_model(load_model(config.models[0], config))
        slow = await settled(app.handle(_request(700)))  # a second or more left to finish
        # The one inference thread answers within the next request's 0.1 s only if the timed
        # out run was stopped rather than left running.
        quick = await settled(app.handle(_request(4)))
        app.watchdog.close()
    assert slow.status == 504
    assert "request timeout of 0.1s" in json.loads(slow.body)["error"]
    assert quick.status == 200
