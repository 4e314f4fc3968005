"""Parallel runs: the threads are split between runs that really execute at the same time."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from serving.app import InferenceApp, settled
from serving.config import load_config
from serving.http import Request
from serving.metrics import Metrics
from serving.model import load_model
from tests.serving.support import build_scale, infer_body, scale_input, start_server


class _MeetingSession:
    """Passes runs on to the real session only once ``parties`` runs have arrived together."""

    def __init__(self, session: Any, parties: int) -> None:
        self.session = session
        self.meeting = threading.Barrier(parties, timeout=10)

    def run(self, outputs: list[str], inputs: dict[str, Any], options: Any = None) -> Any:
        self.meeting.wait()
        return self.session.run(outputs, inputs, options)


def _request(value: float) -> Request:
    body = json.dumps(infer_body(scale_input([[value] * 4]))).encode()
    return Request("POST", "/v2/models/scale/infer", "", {}, body)


async def test_runs_share_the_threads_and_execute_at_the_same_time(tmp_path: Path) -> None:
    config = load_config(
        {"model": [str(build_scale(tmp_path / "scale.onnx"))], "threads": 2, "parallel_runs": 2}
    )
    model = load_model(config.models[0], config)
    assert model.session.get_session_options().intra_op_num_threads == 1
    model.session = _MeetingSession(model.session, parties=2)
    with ThreadPoolExecutor(config.parallel_runs) as executor:
        app = InferenceApp(config, Metrics(), executor)
        app.add_model(model)
        # Each run waits for the other: both answer only if they ran at once.
        responses = await asyncio.gather(*(settled(app.handle(_request(v))) for v in (1, 2)))
    assert [response.status for response in responses] == [200, 200]
    outputs = [json.loads(response.body)["outputs"][0]["data"] for response in responses]
    assert outputs == [[1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]]


@pytest.mark.parametrize("batching", [False, True])
def test_a_server_with_parallel_runs_answers_concurrent_clients(
    tmp_path: Path, batching: bool
) -> None:
    model = build_scale(tmp_path / "scale.onnx")
    options = ["--max-batch-size", "4"] if batching else []
    server = start_server(
        str(model), "--port", "0", "--threads", "2", "--parallel-runs", "2", *options
    )
    try:

        def infer(value: int) -> tuple[int, Any]:
            return server.json(
                "POST", "/v2/models/scale/infer", infer_body(scale_input([[value] * 4]))
            )

        with ThreadPoolExecutor(8) as clients:
            answers = list(clients.map(infer, range(40)))
        assert all(status == 200 for status, _ in answers)
        assert [document["outputs"][0]["data"] for _, document in answers] == [
            [value * 1.0, value * 2.0, value * 3.0, value * 4.0] for value in range(40)
        ]
    finally:
        assert server.stop() == 0
