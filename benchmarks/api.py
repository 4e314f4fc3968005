"""API benchmark: list latency with 10,000 rows, and a 200 MB streamed upload.

- ``GET /models`` and ``GET /deployments`` as a seed client calls them (no paging parameters:
  the default page) p50/p99 over HTTP against the API served by uvicorn in its own process,
  with 10,000 models and 10,000 deployments of the caller in the database, on SQLite and on
  PostgreSQL (a fresh database, dropped afterwards).
- Upload of a 200 MB ONNX model: throughput, and the API process's resident memory growth
  while it receives, hashes, validates and stores the file (sampled every 10 ms; the validator
  child process that large files get is reported on its own line).

Bars (issue 6): p99 < 50 ms; upload memory growth < 50 MB. Prints rich tables, then the results
as JSON (also written to ``benchmarks/results/api.json``), and exits 1 when a bar is missed.
Run: ``make bench-api`` or ``python benchmarks/api.py``; ``--quick`` is a smoke run of a minute
or two (1,000 rows, 100 requests, a 20 MB upload; the same bars, results in ``api-quick.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
POSTGRES_ADMIN_URL = os.environ.get(
    "AIDEPLOY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ADMIN = ("bench", "bench-password")
P99_BAR_MS = 50.0
UPLOAD_MEMORY_BAR_MB = 50.0
console = Console()


@dataclass
class LatencyResult:
    database: str
    endpoint: str
    rows_in_table: int
    requests: int
    p50_ms: float
    p99_ms: float


@dataclass
class UploadResult:
    size_mb: float
    seconds: float
    throughput_mb_s: float
    api_rss_growth_mb: float
    validator_child_peak_mb: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def api_process(data_dir: Path, database_url: str | None) -> Iterator[tuple[str, int]]:
    """``aideploy api`` in a child process; yields its base URL and pid."""
    port = free_port()
    env = {
        **os.environ,
        "AIDEPLOY_DATA_DIR": str(data_dir),
        "AIDEPLOY_ADMIN_USERNAME": ADMIN[0],
        "AIDEPLOY_ADMIN_PASSWORD": ADMIN[1],
        "AIDEPLOY_LOG_LEVEL": "WARNING",
        "AIDEPLOY_MAX_UPLOAD_BYTES": str(1024**3),
    }
    if database_url:
        env["AIDEPLOY_DATABASE_URL"] = database_url
    process = subprocess.Popen(
        [sys.executable, "-c", "from aideploy.cli import main; main()", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"the API did not start: {error[-2000:]}")
        time.sleep(0.1)
    try:
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def seed_rows(database_url: str, count: int) -> None:
    """``count`` models and deployments owned by the benchmark user, inserted in bulk."""
    from sqlalchemy import insert, select, text

    from aideploy.schema import DeploymentCreate, Target, utc_now
    from api.db.engine import Database
    from api.db.tables import DeploymentRow, ModelRow, UserRow

    spec = DeploymentCreate(name="x", model_id="x", target=Target(cloud="local")).model_dump(
        mode="json",
        include={"resource_requirements", "scaling_policy", "cost_optimization_policy", "target"},
    )

    async def run() -> None:
        database = Database(database_url)
        try:
            async with database.session() as session:
                owner = await session.scalar(select(UserRow.id).where(UserRow.username == ADMIN[0]))
                start = utc_now()
                models = [
                    {
                        "id": str(uuid.uuid4()), "owner_id": owner, "name": f"model-{i}",
                        "framework": "onnx", "version": "1.0", "storage_path": f"/m/{i}.onnx",
                        "sha256": "0" * 64, "size_bytes": 1000,
                        "metadata_": {"signature": {"inputs": [{"name": "X", "shape": [-1, 4]}]}},
                        "created_at": start - timedelta(seconds=i), "updated_at": start,
                    }
                    for i in range(count)
                ]  # fmt: skip
                deployments = [
                    {
                        "id": str(uuid.uuid4()), "owner_id": owner, "name": f"deployment-{i}",
                        "model_id": models[i]["id"], "model_type": "original",
                        "deployment_type": "serverless", "status": "hibernated",
                        "endpoint": f"http://127.0.0.1:{10000 + i}", "spec": spec,
                        "metadata_": {}, "runtime": {}, "created_at": start - timedelta(seconds=i),
                        "updated_at": start,
                    }
                    for i in range(count)
                ]  # fmt: skip
                for offset in range(0, count, 1000):
                    await session.execute(insert(ModelRow), models[offset : offset + 1000])
                    await session.execute(
                        insert(DeploymentRow), deployments[offset : offset + 1000]
                    )
            async with database.engine.begin() as connection:
                # Statistics, as autovacuum/ANALYZE keep them on a live database.
                await connection.execute(text("ANALYZE"))
        finally:
            await database.dispose()

    asyncio.run(run())


def measure_lists(base: str, database: str, rows: int, requests: int) -> list[LatencyResult]:
    from api.dependencies import DEFAULT_PAGE_SIZE

    token = httpx.post(
        f"{base}/auth/token", json={"username": ADMIN[0], "password": ADMIN[1]}
    ).json()["token"]
    results = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        for path in ("/models", "/deployments"):
            for _ in range(20):  # warm-up: connections, caches, the statement cache
                client.get(path).raise_for_status()
            timings = []
            for _ in range(requests):
                started = time.perf_counter()
                response = client.get(path)
                timings.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            assert len(response.json()) == min(rows, DEFAULT_PAGE_SIZE)
            timings.sort()
            results.append(
                LatencyResult(
                    database=database,
                    endpoint=f"GET {path}",
                    rows_in_table=rows,
                    requests=requests,
                    p50_ms=round(statistics.median(timings), 2),
                    p99_ms=round(timings[int(len(timings) * 0.99) - 1], 2),
                )
            )
    return results


def build_large_model(path: Path, size_mb: int) -> Path:
    """A valid ONNX model whose weight is ``size_mb`` MB (a Gather over a float table)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = size_mb * 1024 * 1024 // (4 * 256)
    table = np.random.default_rng(0).standard_normal((rows, 256), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vectors"])],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", 256])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def measure_upload(base: str, pid: int, model: Path) -> UploadResult:
    token = httpx.post(
        f"{base}/auth/token", json={"username": ADMIN[0], "password": ADMIN[1]}
    ).json()["token"]
    baseline = _rss_mb(pid)
    peak = {"api": baseline, "child": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["api"] = max(peak["api"], _rss_mb(pid))
            for child in _children(pid):
                peak["child"] = max(peak["child"], _rss_mb(child))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with model.open("rb") as handle:
        response = httpx.post(
            f"{base}/models",
            data={"name": "large", "framework": "onnx"},
            files={"file": (model.name, handle, "application/octet-stream")},
            headers={"Authorization": f"Bearer {token}"},
            timeout=600,
        )
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if response.status_code != 201:
        raise RuntimeError(f"upload failed: {response.status_code} {response.text}")
    size_mb = model.stat().st_size / 1024**2
    return UploadResult(
        size_mb=round(size_mb, 1),
        seconds=round(seconds, 2),
        throughput_mb_s=round(size_mb / seconds, 1),
        api_rss_growth_mb=round(peak["api"] - baseline, 1),
        validator_child_peak_mb=round(peak["child"], 1),
    )


@contextmanager
def postgres_database() -> Iterator[str]:
    import asyncpg  # type: ignore[import-untyped]

    name = f"aideploy_bench_{uuid.uuid4().hex[:10]}"

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--upload-mb", type=int, default=200)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Smoke run: 1,000 rows, 100 requests, a 20 MB upload (the bars still apply).",
    )
    options = parser.parse_args()
    if options.quick:
        options.rows, options.requests, options.upload_mb = 1_000, 100, 20

    from api.dependencies import DEFAULT_PAGE_SIZE

    load_before = os.getloadavg()
    latencies: list[LatencyResult] = []
    upload: UploadResult | None = None
    with tempfile.TemporaryDirectory(prefix="aideploy-bench-api-") as tmp:
        work = Path(tmp)
        targets: list[tuple[str, Any]] = [("sqlite", None)]
        if not options.skip_postgres:
            targets.append(("postgresql", postgres_database))
        for database, factory in targets:
            data_dir = work / database
            with factory() if factory else _no_url() as url:
                effective = url or f"sqlite+aiosqlite:///{data_dir / 'aideploy.db'}"
                with api_process(data_dir, url) as (base, pid):
                    with console.status(f"{database}: seeding {options.rows} rows of each..."):
                        seed_rows(effective, options.rows)
                    with console.status(f"{database}: measuring list latency..."):
                        latencies += measure_lists(base, database, options.rows, options.requests)
                    if database == "sqlite":
                        with console.status(f"building a {options.upload_mb} MB model..."):
                            model = build_large_model(work / "large.onnx", options.upload_mb)
                        with console.status("uploading it..."):
                            upload = measure_upload(base, pid, model)
                        model.unlink()
    load_after = os.getloadavg()

    table = Table(
        title=f"API list latency ({options.rows} rows per table, default page of "
        f"{DEFAULT_PAGE_SIZE})"
    )
    for column in (
        "database",
        "endpoint",
        "requests",
        "p50 ms",
        "p99 ms",
        f"p99 < {P99_BAR_MS:.0f} ms",
    ):
        table.add_column(column)
    for result in latencies:
        table.add_row(
            result.database, result.endpoint, str(result.requests), f"{result.p50_ms:.2f}",
            f"{result.p99_ms:.2f}", "yes" if result.p99_ms < P99_BAR_MS else "NO",
        )  # fmt: skip
    console.print(table)
    if upload is not None:
        table = Table(title="Model upload (streamed multipart, SQLite, local artifact store)")
        for column in ("size MB", "seconds", "MB/s", "API RSS growth MB", "validator child peak MB",
                       f"growth < {UPLOAD_MEMORY_BAR_MB:.0f} MB"):  # fmt: skip
            table.add_column(column)
        table.add_row(
            f"{upload.size_mb}", f"{upload.seconds}", f"{upload.throughput_mb_s}",
            f"{upload.api_rss_growth_mb}", f"{upload.validator_child_peak_mb}",
            "yes" if upload.api_rss_growth_mb < UPLOAD_MEMORY_BAR_MB else "NO",
        )  # fmt: skip
        console.print(table)
    console.print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"({os.cpu_count()} CPUs)"
    )
    missed = [
        f"{result.database} {result.endpoint}: p99 {result.p99_ms:.2f} ms (bar < {P99_BAR_MS:.0f})"
        for result in latencies
        if result.p99_ms >= P99_BAR_MS
    ]
    if upload is not None and upload.api_rss_growth_mb >= UPLOAD_MEMORY_BAR_MB:
        missed.append(
            f"upload: API memory grew {upload.api_rss_growth_mb} MB "
            f"(bar < {UPLOAD_MEMORY_BAR_MB:.0f})"
        )
    report = json.dumps(
        {
            "quick": options.quick,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "load_average": {"before": load_before[0], "after": load_after[0]},
            "bars": {"p99_ms": P99_BAR_MS, "upload_memory_growth_mb": UPLOAD_MEMORY_BAR_MB},
            "bars_missed": missed,
            "latency": [asdict(result) for result in latencies],
            "upload": asdict(upload) if upload else None,
        },
        indent=2,
    )
    print(report)
    results = RESULTS / ("api-quick.json" if options.quick else "api.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(report + "\n")
    console.print(f"wrote {results}")
    for line in missed:
        console.print(f"[bold red]bar missed[/]: {line}")
    return 1 if missed else 0


@contextmanager
def _no_url() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    sys.exit(main())
