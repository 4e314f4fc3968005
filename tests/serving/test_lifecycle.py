"""The server process: loading sources, the container entry point, batching, SIGTERM drain."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving.support import (
    ROOT,
    Server,
    build_scale,
    infer_body,
    scale_input,
    serving_env,
    start_server,
)


def _run_to_exit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving", *args, "--port", "0"],
        cwd=ROOT,
        env=serving_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _infer_scale(server: Server, name: str = "scale") -> list[float]:
    status, document = server.json(
        "POST", f"/v2/models/{name}/infer", infer_body(scale_input([[1, 1, 1, 1]]))
    )
    assert status == 200, document
    return list(document["outputs"][0]["data"])


def test_folder_with_one_model(tmp_path: Path) -> None:
    build_scale(tmp_path / "encoder" / "model.onnx")
    (tmp_path / "encoder" / "report.json").write_text("{}")
    server = start_server(str(tmp_path / "encoder"), "--port", "0")
    try:
        assert _infer_scale(server, "encoder") == [1, 2, 3, 4]
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("missing", "no such file or folder"),
        ("two", "the folder holds 2 .onnx files (a.onnx, b.onnx); expected exactly one"),
        ("empty", "the folder holds no .onnx file"),
        ("corrupt", "onnxruntime cannot load it"),
        ("bad-uri", "no such object or folder"),
    ],
)
def test_unloadable_models_exit_2_with_one_clear_line(
    tmp_path: Path, setup: str, needle: str
) -> None:
    source = str(tmp_path / "m")
    if setup == "two":
        build_scale(tmp_path / "m" / "a.onnx")
        build_scale(tmp_path / "m" / "b.onnx")
    elif setup == "empty":
        (tmp_path / "m").mkdir()
    elif setup == "corrupt":
        source = str(tmp_path / "m.onnx")
        Path(source).write_bytes(b"not a model")
    elif setup == "bad-uri":
        source = f"file://{tmp_path}/absent.onnx"
    result = _run_to_exit(source)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert needle in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--threads", "zero"], "--threads: expected a whole number, got 'zero'"),
        (["--max-body-bytes", "lots"], "expected a byte size such as 64MiB or 10MB"),
        (["--bogus", "1"], "unknown option --bogus"),
        (["--log-level", "LOUD"], "expected one of DEBUG, INFO, WARNING, ERROR"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    result = _run_to_exit(str(build_scale(tmp_path / "scale.onnx")), *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert needle in result.stderr


def test_uri_source_downloads_once_into_the_cache(tmp_path: Path) -> None:
    """``file://`` goes through fsspec exactly like ``s3://`` would; the copy is reused."""
    build_scale(tmp_path / "remote" / "scale.onnx")
    cache = tmp_path / "cache"
    env = {"AIDEPLOY_SERVE_MODEL_DIR": str(cache)}
    for attempt in range(2):
        server = start_server(f"file://{tmp_path}/remote/scale.onnx", "--port", "0", env=env)
        try:
            assert _infer_scale(server) == [1, 2, 3, 4]
        finally:
            assert server.stop() == 0
        cached = "using the cached copy" in "\n".join(server.log)
        assert cached == (attempt == 1)
    assert [path.name for path in cache.glob("*/scale.onnx")] == ["scale.onnx"]


def test_container_entry_point_reads_the_environment_and_healthcheck_follows_it(
    tmp_path: Path,
) -> None:
    """What the Dockerfile runs: ``python -m serving`` configured only by variables, and
    ``python -m serving.healthcheck`` finding the same port."""
    build_scale(tmp_path / "scale.onnx")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "AIDEPLOY_SERVE_MODEL_URI": f"clf={tmp_path / 'scale.onnx'}",
        "PORT": str(port),
        "AIDEPLOY_SERVE_HOST": "0.0.0.0",
    }

    def healthcheck() -> int:
        command = [sys.executable, "-m", "serving.healthcheck"]
        return subprocess.run(
            command, cwd=ROOT, env=serving_env(env), capture_output=True, timeout=30
        ).returncode

    server = start_server(env=env)
    try:
        assert server.port == port
        assert _infer_scale(server, "clf") == [1, 2, 3, 4]
        assert healthcheck() == 0
    finally:
        assert server.stop() == 0
    assert healthcheck() == 1


def _slow_batching_server(tmp_path: Path, delay_ms: int) -> Server:
    return start_server(
        str(build_scale(tmp_path / "scale.onnx")),
        "--port",
        "0",
        "--max-batch-size",
        "64",
        "--max-batch-delay-ms",
        str(delay_ms),
    )


def test_adaptive_batching_merges_concurrent_requests(tmp_path: Path) -> None:
    server = _slow_batching_server(tmp_path, delay_ms=200)
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        results[i] = server.json(
            "POST", "/v2/models/scale/infer", infer_body(scale_input([[i, i, i, i]] * (1 + i % 2)))
        )

    try:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i, (status, document) in results.items():
            assert status == 200
            assert document["outputs"][0]["data"] == [i, 2 * i, 3 * i, 4 * i] * (1 + i % 2)
        text = server.request("GET", "/metrics")[2].decode()
        runs = int(text.split('aideploy_inference_batch_rows_count{model="scale"} ')[1].split()[0])
        rows = float(text.split('aideploy_inference_batch_rows_sum{model="scale"} ')[1].split()[0])
        assert rows == 12
        assert runs < 8  # several requests shared a run
    finally:
        assert server.stop() == 0


def _refuses_connections(port: int, within: float) -> bool:
    """Whether the listening socket closes within ``within`` seconds (a busy CPU delays it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.02)
    return False


def test_sigterm_finishes_in_flight_requests_then_exits_0(tmp_path: Path) -> None:
    # A request now waits 3 s in the batcher: long enough to be in flight at SIGTERM.
    server = _slow_batching_server(tmp_path, delay_ms=3000)
    body = json.dumps(infer_body(scale_input([[1, 1, 1, 1]]))).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /v2/models/scale/infer HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)
        server.process.terminate()
        assert _refuses_connections(server.port, within=1.0)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in answer
    assert b'"data":[1.0,2.0,3.0,4.0]' in answer
    # Wait, not stop(): a second SIGTERM while the process is exiting would kill it.
    assert server.process.wait(timeout=30) == 0
    server.drain_log()
    assert any("finishing 1 in-flight request(s)" in line for line in server.log)


async def test_ready_only_once_loaded_and_the_first_request_waits_for_the_model(
    tmp_path: Path,
) -> None:
    """The port opens before loading; the request that woke a scaled-to-zero instance waits
    for the model instead of being refused (checked in-process, where loading can be held)."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.app import InferenceApp, settled
    from serving.config import load_config
    from serving.http import Request
    from serving.metrics import Metrics
    from serving.model import load_model

    config = load_config({"model": [str(build_scale(tmp_path / "scale.onnx"))]})
    with ThreadPoolExecutor(1) as executor:
        app = InferenceApp(config, Metrics(), executor)
        ready = await settled(app.handle(Request("GET", "/v2/health/ready", "", {}, b"")))
        assert (ready.status, app.ready) == (503, False)
        body = json.dumps(infer_body(scale_input([[1, 1, 1, 1]]))).encode()
        waiting = asyncio.ensure_future(
            settled(app.handle(Request("POST", "/v2/models/scale/infer", "", {}, body)))
        )
        await asyncio.sleep(0.05)
        assert not waiting.done()
        app.add_model(load_model(config.models[0], config))
        response = await waiting
        assert response.status == 200
        assert json.loads(response.body)["outputs"][0]["data"] == [1, 2, 3, 4]
        ready = await settled(app.handle(Request("GET", "/v2/health/ready", "", {}, b"")))
        assert ready.status == 200


@pytest.fixture
def collector() -> Iterator[None]:
    """Undo what the server does to the garbage collector once ready (it freezes every object
    alive), for the tests that run its start-up in this process."""
    yield
    gc.unfreeze()
    gc.enable()


class _HeldSession:
    """A session whose runs are recorded and, while ``hold`` is clear, kept waiting."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.feeds: list[dict[str, Any]] = []
        self.hold = threading.Event()

    def run(self, outputs: Any, feeds: dict[str, Any], options: Any = None) -> Any:
        self.feeds.append(feeds)
        self.hold.wait(10)
        return self.session.run(outputs, feeds, options)


@pytest.mark.parametrize("valid", [True, False])
async def test_the_request_that_woke_the_server_is_the_warm_up(
    tmp_path: Path, valid: bool, collector: None
) -> None:
    """A request waiting for the model does not also wait for a run on zeros: its own run is
    the warm-up, and the server is ready only once it ran. When the waiting requests give the
    model nothing to run (refused), the warm-up on zeros still happens."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from serving.app import InferenceApp, settled
    from serving.config import load_config
    from serving.http import Request
    from serving.metrics import Metrics
    from serving.model import ServedModel, open_model
    from serving.server import _receive_models

    config = load_config({"model": [str(build_scale(tmp_path / "scale.onnx"))]})
    model = open_model(config.models[0], config)
    session = _HeldSession(model.session)
    model.session = session
    loaded: Future[ServedModel] = Future()
    with ThreadPoolExecutor(1) as executor:
        app = InferenceApp(config, Metrics(), executor)
        receiving = asyncio.ensure_future(
            _receive_models(config, app, [loaded], time.perf_counter(), app.metrics)
        )
        rows: list[list[float]] = [[1, 1, 1, 1]] if valid else [[1, 1, 1]]
        body = json.dumps(infer_body(scale_input(rows))).encode()
        waiting = asyncio.ensure_future(
            settled(app.handle(Request("POST", "/v2/models/scale/infer", "", {}, body)))
        )
        await asyncio.sleep(0.01)
        loaded.set_result(model)
        while not session.feeds:
            await asyncio.sleep(0.01)
        ready = await settled(app.handle(Request("GET", "/v2/health/ready", "", {}, b"")))
        assert ready.status == 503  # the first run has not finished
        session.hold.set()
        response = await waiting
        await asyncio.wait_for(receiving, 10)
    if valid:
        assert response.status == 200
        assert json.loads(response.body)["outputs"][0]["data"] == [1, 2, 3, 4]
        assert [feeds["x"].tolist() for feeds in session.feeds] == [[[1, 1, 1, 1]]]
    else:
        assert response.status == 400
        assert [feeds["x"].tolist() for feeds in session.feeds] == [[[0, 0, 0, 0]]]
    assert app.ready
    assert model.phases["warm_up"] > 0


async def test_garbage_collection_is_off_while_starting_and_on_once_ready(
    tmp_path: Path, collector: None
) -> None:
    """The entry point turns the cyclic collector off (the imports run ~20% faster without
    it); the server must turn it back on once ready, or reference cycles would never be freed."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from serving.app import InferenceApp
    from serving.config import load_config
    from serving.metrics import Metrics
    from serving.model import ServedModel, open_model
    from serving.server import _receive_models

    entry = subprocess.run(
        [sys.executable, "-c", "import gc, serving.__main__; print(gc.isenabled())"],
        cwd=ROOT,
        env=serving_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert entry.stdout.strip() == "False"
    config = load_config({"model": [str(build_scale(tmp_path / "scale.onnx"))]})
    loaded: Future[ServedModel] = Future()
    loaded.set_result(open_model(config.models[0], config))
    gc.disable()
    with ThreadPoolExecutor(1) as executor:
        app = InferenceApp(config, Metrics(), executor)
        await _receive_models(config, app, [loaded], time.perf_counter(), app.metrics)
    assert app.ready
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_concurrency_limit_is_503_and_request_timeout_is_504(tmp_path: Path) -> None:
    server = start_server(
        str(build_scale(tmp_path / "scale.onnx")),
        *("--port", "0", "--max-batch-size", "64", "--max-batch-delay-ms", "800"),
        *("--max-concurrency", "1", "--request-timeout", "0.3"),
    )
    first: dict[str, Any] = {}
    body = json.dumps(infer_body(scale_input([[1, 1, 1, 1]])))

    def call() -> None:
        first["answer"] = server.request("POST", "/v2/models/scale/infer", body)

    try:
        waiting = threading.Thread(target=call)
        waiting.start()
        time.sleep(0.1)
        status, headers, data = server.request("POST", "/v2/models/scale/infer", body)
        assert (status, headers["retry-after"]) == (503, "1")
        assert "limit of 1 concurrent inference requests" in json.loads(data)["error"]
        waiting.join()
        status, _, data = first["answer"]
        assert status == 504
        assert "longer than the request timeout of 0.3s" in json.loads(data)["error"]
    finally:
        assert server.stop() == 0


def test_fetch_through_fsspec_memory_filesystem_and_read_only_fallback(tmp_path: Path) -> None:
    """An object-store folder (fsspec's in-memory filesystem standing in for s3://) is copied
    whole, reused while unchanged, fetched again when it changes; an unwritable model folder
    falls back to the temporary directory (AWS Lambda)."""
    import fsspec

    from serving.model import fetch_model, model_file

    memory = fsspec.filesystem("memory")
    scale = build_scale(tmp_path / "scale.onnx").read_bytes()
    memory.pipe("/bucket/enc/model.onnx", scale)
    memory.pipe("/bucket/enc/model.onnx.data", b"weights")
    cache = tmp_path / "cache"
    first = fetch_model("memory://bucket/enc", cache)
    assert model_file(first, "memory://bucket/enc").read_bytes() == scale
    assert (first / "model.onnx.data").read_bytes() == b"weights"
    assert fetch_model("memory://bucket/enc", cache) == first
    memory.pipe("/bucket/enc/model.onnx.data", b"new weights")
    assert (
        fetch_model("memory://bucket/enc", cache) / "model.onnx.data"
    ).read_bytes() == b"new weights"
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")  # mkdir under a file fails even for root, like a read-only FS
    fetched = fetch_model("memory://bucket/enc/model.onnx", not_a_folder / "models")
    assert fetched.read_bytes() == scale
    assert not fetched.is_relative_to(tmp_path)


async def test_stopping_answers_requests_still_waiting_for_a_model(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from serving.app import InferenceApp, settled
    from serving.config import load_config
    from serving.http import Request
    from serving.metrics import Metrics

    config = load_config({"model": [str(tmp_path / "never-loaded.onnx")]})
    with ThreadPoolExecutor(1) as executor:
        app = InferenceApp(config, Metrics(), executor)
        body = json.dumps(infer_body(scale_input([[1, 1, 1, 1]]))).encode()
        waiting = asyncio.ensure_future(
            settled(app.handle(Request("POST", "/v2/models/never-loaded/infer", "", {}, body)))
        )
        metadata = asyncio.ensure_future(
            settled(app.handle(Request("GET", "/v2/models/never-loaded", "", {}, b"")))
        )
        await asyncio.sleep(0.01)
        app.stop()
        for response in await asyncio.gather(waiting, metadata):
            assert response.status == 503
            assert (
                "shutting down before model 'never-loaded' finished loading"
                in json.loads(response.body)["error"]
            )


def test_non_tensor_outputs_are_left_out_and_unservable_inputs_refused(tmp_path: Path) -> None:
    """Like skl2onnx's ZipMap output (a sequence of maps): the tensor outputs are still served."""
    from onnx import TensorProto, helper

    from aideploy.errors import NotSupportedError
    from serving.config import load_config
    from serving.model import load_model
    from tests.serving.support import save_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    mixed = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["y"]),
            helper.make_node("SequenceConstruct", ["x"], ["seq"]),
        ],
        "mixed",
        [x],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
            helper.make_value_info(
                "seq",
                helper.make_sequence_type_proto(
                    helper.make_tensor_type_proto(TensorProto.FLOAT, [2])
                ),
            ),
        ],
    )
    config = load_config({"model": [str(save_model(mixed, tmp_path / "mixed.onnx"))], "threads": 1})
    model = load_model(config.models[0], config)
    assert list(model.outputs) == ["y"]
    bf16 = helper.make_graph(
        [helper.make_node("Identity", ["b"], ["c"])],
        "bf16",
        [helper.make_tensor_value_info("b", TensorProto.BFLOAT16, [2])],
        [helper.make_tensor_value_info("c", TensorProto.BFLOAT16, [2])],
    )
    config = load_config({"model": [str(save_model(bf16, tmp_path / "bf16.onnx"))]})
    with pytest.raises(
        NotSupportedError, match=r"input 'b' has type tensor\(bfloat16\), which is not served"
    ):
        load_model(config.models[0], config)
