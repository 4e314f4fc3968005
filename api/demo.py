"""``aideploy demo``: a new user's first session, over HTTP, against the embedded default.

It starts the API in this process (SQLite, local artifact store, local target) on a free port
with a throw-away data directory, then walks the steps a user would take: get a token, upload
a model it trains on the spot (a small digits classifier), optimize it, deploy the optimized
model locally, send inference requests, hibernate and activate, and show the analytics.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from aideploy.errors import AideployError
from api.analytics.cli import format_money

console = Console()
_BUSY = {"creating", "updating", "hibernating", "activating", "deleting"}


class DemoError(AideployError):
    """A demo step failed; the message names the step and the API's answer."""


def build_digits_model(path: Path) -> tuple[Path, Path, Any, Any]:
    """Train a small digits classifier (random ReLU features + ridge readout, numpy only) and
    save it as ONNX, and its held-out images with their labels as sample data (``.npz``).
    Returns both paths and a few held-out images with their labels."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DemoError(
            "the demo trains its sample model on scikit-learn's digits: pip install scikit-learn "
            "(make demo installs it)"
        ) from None

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train, test = order[:1500], order[1500:]
    hidden = 512
    w1 = rng.normal(0, 1 / np.sqrt(64), (64, hidden)).astype(np.float32)
    b1 = rng.normal(0, 0.1, hidden).astype(np.float32)
    features = np.maximum(images[train] @ w1 + b1, 0)
    targets = np.eye(10, dtype=np.float32)[labels[train]]
    w2 = np.linalg.solve(features.T @ features + 1.0 * np.eye(hidden), features.T @ targets)
    w2 = w2.astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["pixels", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("MatMul", ["a", "w2"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
        ],
        "digits",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    samples = path.with_suffix(".npz")
    np.savez(samples, pixels=images[test], labels=labels[test].astype(np.int64))
    return path, samples, images[test][:8], labels[test][:8]


@contextmanager
def embedded_api(data_dir: Path, admin: tuple[str, str]) -> Iterator[str]:
    """The API on a free localhost port in a background thread; yields its base URL."""
    import uvicorn

    from aideploy.settings import load_settings
    from api.app import create_app
    from api.runners.local import free_port

    port = free_port()
    settings = load_settings(
        data_dir=data_dir,
        admin_username=admin[0],
        admin_password=admin[1],
        log_level="WARNING",
        api_port=port,
        usage_report_interval_seconds=1,  # so the analytics step has this session's traffic
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="aideploy-demo-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise DemoError("the API did not start; run `aideploy api` to see why")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _check(response: httpx.Response, step: str, *expected: int) -> Any:
    if response.status_code not in expected:
        raise DemoError(f"{step}: HTTP {response.status_code} {response.text}")
    return response.json()


def _wait(
    fetch: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = 300
) -> Any:
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for {what}..."):
        while time.monotonic() < deadline:
            value = fetch()
            if done(value):
                return value
            time.sleep(0.2)
    raise DemoError(f"{what} did not finish within {timeout:.0f} s")


def _step(number: int, title: str) -> None:
    console.rule(f"[bold]{number}. {title}")


def _infer(endpoint: str, name: str, images: Any) -> list[int]:
    body = {
        "inputs": [
            {
                "name": "pixels",
                "datatype": "FP32",
                "shape": list(images.shape),
                "data": images.ravel().tolist(),
            }
        ]
    }
    response = httpx.post(f"{endpoint}/v2/models/{name}/infer", json=body, timeout=30)
    output = _check(response, "inference", 200)["outputs"][0]
    rows, classes = output["shape"]
    data: list[float] = output["data"]
    scores = [data[row * classes : (row + 1) * classes] for row in range(rows)]
    return [row.index(max(row)) for row in scores]


def run_demo(keep: bool = False) -> None:
    """Walk the first session; with ``keep`` the data directory is left for inspection."""
    admin = ("demo", secrets.token_urlsafe(12))
    data_dir = Path(tempfile.mkdtemp(prefix="aideploy-demo-"))
    try:
        _step(0, "Start the API (embedded: SQLite, local artifact store, local target)")
        with embedded_api(data_dir, admin) as base:
            console.print(f"API at {base} (OpenAPI at {base}/schema), data in {data_dir}")
            _walk(httpx.Client(base_url=base, timeout=60), data_dir, admin)
    finally:
        if keep:
            console.print(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def _walk(client: httpx.Client, data_dir: Path, admin: tuple[str, str]) -> None:
    _step(1, "Get a token")
    token = _check(
        client.post("/auth/token", json={"username": admin[0], "password": admin[1]}), "token", 200
    )
    client.headers["Authorization"] = f"Bearer {token['token']}"
    console.print(f"token valid until {token['expires_at']}")

    _step(2, "Upload a model (a digits classifier trained just now) with labelled sample data")
    model_path, samples_path, images, labels = build_digits_model(data_dir / "digits.onnx")
    with model_path.open("rb") as handle, samples_path.open("rb") as samples:
        model = _check(
            client.post(
                "/models",
                data={"name": "digits", "framework": "onnx", "version": "1.0"},
                files={
                    "file": ("digits.onnx", handle),
                    "sample_data": ("digits-held-out.npz", samples),
                },
            ),
            "upload",
            201,
        )
    details = _check(client.get(f"/models/{model['model_id']}"), "model", 200)
    signature = details["metadata"]["signature"]
    console.print(
        f"model {model['model_id']}: {details['metadata']['size_bytes']} bytes, sha256 "
        f"{details['metadata']['sha256'][:16]}..., inputs "
        f"{[(t['name'], t['shape']) for t in signature['inputs']]}"
    )

    _step(
        3, "Optimize it (auto: the smallest, fastest candidate within 1 point), in the background"
    )
    job = _check(
        client.post(
            f"/models/{model['model_id']}/optimize",
            json={"method": "auto", "metadata": {"max_accuracy_drop": 1.0}},
        ),
        "optimize",
        202,
    )
    console.print(f"optimization {job['id']} is {job['status']}")
    results = _wait(
        lambda: _check(client.get(f"/models/{model['model_id']}/optimized"), "optimized", 200),
        lambda rows: rows and rows[0]["status"] != "optimizing",
        "the optimization",
    )
    optimized = results[0]
    if optimized["status"] != "completed":
        raise DemoError(f"optimization failed: {optimized['status_reason']}")
    table = Table(title="candidates measured against the original (the chosen one first)")
    for column in ("candidate", "size reduction", "latency reduction", "accuracy change"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for candidate in optimized["metadata"].get("candidates", []):
        table.add_row(
            candidate["name"],
            f"{candidate['size_reduction_percentage']:.1f} %",
            f"{candidate['latency_reduction_percentage']:.1f} %",
            f"{candidate['accuracy_change_percentage']:+.2f} pp",
        )
    console.print(table)
    console.print(
        f"chosen: {optimized['metadata'].get('precision') or 'graph-optimized fp32'}, "
        f"accuracy metric {optimized['metadata'].get('accuracy_metric')}"
    )
    for note in optimized["metadata"].get("notes", []):
        console.print(f"  note: {note}")

    _step(4, "Deploy the optimized model locally")
    deployment = _check(
        client.post(
            "/deployments",
            json={
                "name": "digits",
                "model_id": optimized["id"],
                "model_type": "optimized",
                "deployment_type": "serverless",
                "resource_requirements": {"cpu": "1", "memory": "512Mi"},
                "scaling_policy": {"min_instances": 0, "max_instances": 1},
                "cost_optimization_policy": {"hibernation_enabled": True},
                "target": {"cloud": "local"},
            },
        ),
        "deploy",
        202,
    )
    deployment_id = deployment["id"]

    def current() -> Any:
        return _check(client.get(f"/deployments/{deployment_id}"), "deployment", 200)

    active = _wait(current, lambda d: d["status"] not in _BUSY, "the deployment")
    if active["status"] != "active":
        raise DemoError(f"deployment failed: {active['status_reason']}")
    endpoint = active["endpoint"]
    console.print(f"deployment {deployment_id} is active at {endpoint}")

    _step(5, "Send inference requests to the endpoint, one image each")
    predictions = [_infer(endpoint, "digits", image[None, :])[0] for image in images]
    table = Table(title="predictions")
    table.add_column("label")
    table.add_column("predicted")
    for label, predicted in zip(labels.tolist(), predictions, strict=True):
        table.add_row(str(label), f"{predicted}{'' if predicted == label else '  (wrong)'}")
    console.print(table)

    _step(6, "Hibernate (scale to zero), then activate on the same endpoint")
    _check(client.post(f"/deployments/{deployment_id}/hibernate"), "hibernate", 202)
    hibernated = _wait(current, lambda d: d["status"] not in _BUSY, "hibernation")
    console.print(f"status {hibernated['status']}; endpoint {hibernated['endpoint']}")
    _check(client.post(f"/deployments/{deployment_id}/activate"), "activate", 202)
    started = time.perf_counter()
    reactivated = _wait(current, lambda d: d["status"] not in _BUSY, "activation")
    console.print(
        f"status {reactivated['status']} after {time.perf_counter() - started:.2f} s; "
        f"same endpoint: {reactivated['endpoint'] == endpoint}"
    )
    console.print(f"predictions again: {_infer(endpoint, 'digits', images[:3])}")
    requests_sent = len(images) + 1

    _step(7, "Analytics")
    deadline = time.monotonic() + 15  # servers report usage every second
    with console.status("waiting for the deployment's usage reports..."):
        while time.monotonic() < deadline:
            performance = client.get("/analytics/performance")
            if (
                performance.status_code != 200
                or performance.json()["total_requests"] >= requests_sent
            ):
                break
            time.sleep(0.5)
    _show_analytics(client)

    _step(8, "Clean up")
    _check(client.delete(f"/deployments/{deployment_id}"), "delete deployment", 202)
    _wait(
        lambda: client.get(f"/deployments/{deployment_id}").status_code,
        lambda status: status == 404,
        "the deletion",
    )
    _check(client.delete(f"/models/{model['model_id']}"), "delete model", 200)
    console.print("deployment and model deleted; the demo is done")


def _show_analytics(client: httpx.Client) -> None:
    """The four analytics views, summarized as tables."""
    views = {
        view: client.get(f"/analytics/{view}")
        for view in ("cost", "performance", "forecast", "suggestions")
    }
    for view, response in views.items():
        if response.status_code != 200:
            console.print(f"/analytics/{view}: HTTP {response.status_code} {response.text}")
    if views["cost"].status_code == 200:
        cost = views["cost"].json()
        table = Table(title=f"cost over the last 30 days ({cost.get('currency', 'USD')})")
        for column in ("this platform", "AWS endpoint", "Azure endpoint", "GCP endpoint"):
            table.add_column(column)
        comparison = cost["comparison"]
        savings = comparison["savings_percentage"]
        currency = cost.get("currency", "USD")
        table.add_row(
            format_money(comparison["our_platform"], currency),
            *(
                f"{format_money(comparison[cloud], currency)} (we save {savings.get(cloud, 0):.0f} %)"
                for cloud in ("aws", "azure", "gcp")
            ),
        )
        console.print(table)
    if views["performance"].status_code == 200:
        performance = views["performance"].json()
        console.print(
            f"performance: {performance['total_requests']} requests, mean latency "
            f"{performance['avg_latency']:.2f} ms, error rate {performance['error_rate']:.2f} %"
        )
    if views["forecast"].status_code == 200:
        forecast = views["forecast"].json()
        if not forecast["total_requests_forecast"]:
            console.print("forecast: not enough history yet")
        else:
            console.print(
                f"forecast over {forecast['days']} days: requests "
                f"{[round(value) for value in forecast['total_requests_forecast'][:3]]}..., cost "
                f"{[round(value, 4) for value in forecast['total_cost_forecast'][:3]]}..."
            )
    if views["suggestions"].status_code == 200:
        suggestions = views["suggestions"].json()["suggestions_by_deployment"]
        for entry in suggestions.values():
            for suggestion in entry["suggestions"]:
                console.print(f"suggestion for {entry['deployment_name']}: {suggestion['message']}")
        if not suggestions:
            console.print("no suggestions yet")
