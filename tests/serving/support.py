"""Helpers of the serving tests: tiny ONNX models built with ``onnx.helper`` and a real server
process to talk HTTP to."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")


def save_model(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_scale(path: Path) -> Path:
    """``y = x * [1, 2, 3, 4]`` with a dynamic batch axis: ``x`` FP32 ``[batch, 4]``."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])],
    )
    return save_model(graph, path)


# name -> (ONNX type, shape); every input comes back through an Identity as "<name>_out".
MULTI_TENSORS: dict[str, tuple[int, list[Any]]] = {
    "f16": (TensorProto.FLOAT16, [2]),
    "f64": (TensorProto.DOUBLE, [2]),
    "i64": (TensorProto.INT64, [2]),
    "i32": (TensorProto.INT32, ["n"]),
    "i8": (TensorProto.INT8, [3]),
    "u8": (TensorProto.UINT8, [3]),
    "flag": (TensorProto.BOOL, [2]),
    "text": (TensorProto.STRING, ["m"]),
}


def build_chain(path: Path, matmuls: int = 40) -> Path:
    """``y = x @ x @ ... @ x`` for a square FP32 ``x`` ``[n, n]``: as slow as ``n`` makes it."""
    nodes, previous = [], "x"
    for index in range(matmuls):
        nodes.append(helper.make_node("MatMul", [previous, "x"], [f"m{index}"]))
        previous = f"m{index}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "n"])],
    )
    return save_model(graph, path)


def build_multi(path: Path) -> Path:
    """Several datatypes at once, each echoed, plus ``total`` = sum of ``i64`` (INT64 ``[]``)."""
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name in MULTI_TENSORS]
    nodes.append(helper.make_node("ReduceSum", ["i64"], ["total"], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "multi",
        [
            helper.make_tensor_value_info(name, kind, shape)
            for name, (kind, shape) in MULTI_TENSORS.items()
        ],
        [
            *(
                helper.make_tensor_value_info(f"{n}_out", k, s)
                for n, (k, s) in MULTI_TENSORS.items()
            ),
            helper.make_tensor_value_info("total", TensorProto.INT64, []),
        ],
    )
    return save_model(graph, path)


def build_add(path: Path) -> Path:
    """``a + b`` over two dynamic-length vectors: lengths 2 and 3 fail inside onnxruntime."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "add",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["k"]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["n"])],
    )
    return save_model(graph, path)


def build_grid(path: Path) -> Path:
    """``y = x`` over FP32 ``[rows, cols]``, both dimensions dynamic."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "grid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", "cols"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", "cols"])],
    )
    return save_model(graph, path)


def build_wide(path: Path) -> Path:
    """``y = u`` over UINT64 ``[n]``: values up to 2**64 - 1."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["u"], ["v"])],
        "wide",
        [helper.make_tensor_value_info("u", TensorProto.UINT64, ["n"])],
        [helper.make_tensor_value_info("v", TensorProto.UINT64, ["n"])],
    )
    return save_model(graph, path)


@dataclass
class Server:
    """A running ``python -m serving`` process and a way to talk to it. Its log is read on a
    thread as it comes, so a chatty server never blocks on a full pipe."""

    process: subprocess.Popen[str]
    port: int
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def json(self, method: str, path: str, document: Any = None) -> tuple[int, Any]:
        body = None if document is None else json.dumps(document)
        status, _, data = self.request(method, path, body)
        return status, json.loads(data) if data else None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.drain_log()

    def follow_log(self) -> None:
        """Keep reading the log on a thread from now on."""

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line.rstrip())

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    def drain_log(self) -> None:
        """After the process ended: the rest of its log."""
        if self.process.poll() is None:
            return
        if self.reader is not None:
            self.reader.join(timeout=10)
        elif self.process.stderr is not None:
            self.log += self.process.stderr.read().splitlines()


def serving_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AIDEPLOY_SERVE_") and k != "PORT"
    }
    env.update(extra or {})
    return env


def start_server(
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    command: list[str] | None = None,
    cwd: Path = ROOT,
) -> Server:
    """Start the server on a free port (``--port 0``) and wait until it listens (and is ready)."""
    base = command or [sys.executable, "-m", "serving"]
    process = subprocess.Popen(
        [*base, *args],
        cwd=cwd,
        env=serving_env(env),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    server = Server(process, 0)
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            server.drain_log()
            raise AssertionError(f"server exited with {process.wait()}: {server.log}")
        server.log.append(line.rstrip())
        match = _LISTENING.search(line)
        if match:
            server.port = int(match.group(1))
            server.follow_log()
            break
    while wait_ready and time.monotonic() < deadline:
        if server.request("GET", "/v2/health/ready")[0] == 200:
            return server
        time.sleep(0.01)
    return server


def infer_body(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"inputs": list(inputs), **extra}


def scale_input(rows: list[list[float]]) -> dict[str, Any]:
    return {"name": "x", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}
