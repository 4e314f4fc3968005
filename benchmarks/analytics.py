"""Analytics benchmark: ingestion, roll-up and the four analyses on a month of usage.

One owner with ``--deployments`` deployments (default 20), each with 30 days of hourly rows and
the last 7 days also as per-minute rows (what the default retention keeps), in a fresh SQLite
database (and PostgreSQL with ``--postgres``). Measured in-process, without HTTP, so the numbers
are the storage and engine cost of each endpoint:

- ingestion of one instance's 60-minute report (``record_usage``), p50 and p99;
- the roll-up of one day of minutes of every deployment into hours;
- each analysis over the default 30-day window (load from the database + compute), median of 3;
  performance also reads the 4 weeks before the window its anomaly baselines reach back to.

Bar: every analysis of 20 deployments x 30 days answers in under 2 s. Prints a rich table and
writes ``benchmarks/results/analytics.json``. Run: ``python benchmarks/analytics.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert

from aideploy.schema import Cloud, utc_now
from aideploy_iac.pricing import load_catalog
from api.analytics.cost import PricingOptions, analyze_cost
from api.analytics.forecast import forecast_usage
from api.analytics.performance import (
    BASELINE_LOOKBACK,
    PerformanceThresholds,
    analyze_performance,
)
from api.analytics.records import LATENCY_BOUNDS_MS, Window, floor_hour
from api.analytics.schemas import UsageReport
from api.analytics.store import (
    load_facts,
    load_samples,
    load_threshold_minutes,
    record_usage,
    roll_up,
)
from api.analytics.suggestions import suggest
from api.analytics.tables import UsageDeploymentRow, UsageHourRow, UsageMinuteRow
from api.auth.service import create_user
from api.db.engine import Database
from api.db.tables import DeploymentRow
from api.deployments.service import to_deployment

RESULTS = Path(__file__).resolve().parent / "results" / "analytics.json"
BAR_SECONDS = 2.0
RETENTION = timedelta(days=7)
console = Console()


def _usage(requests: int, seconds: float) -> dict[str, Any]:
    buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    buckets[6] = requests
    return {
        "requests": requests,
        "errors": requests // 100,
        "latency_ms_sum": 40.0 * requests,
        "latency_buckets": buckets,
        "instance_seconds": seconds,
        "cpu_seconds": 0.3 * seconds,
        "memory_byte_seconds": seconds * 2**29,
        "memory_peak_bytes": 2**29,
        "bytes_out": 1500 * requests,
    }


async def _seed(database: Database, deployments: int) -> tuple[str, int]:
    """The owner and how many usage rows were written."""
    async with database.session() as session:
        owner = await create_user(session, "bench", "bench-password")
    now = floor_hour(utc_now())
    cutoff = now - RETENTION
    rows = 0
    for index in range(deployments):
        async with database.session() as session:
            deployment = DeploymentRow(
                owner_id=owner.id,
                name=f"model-{index}",
                model_id="bench",
                model_type="original",
                deployment_type="kubernetes" if index % 2 else "serverless",
                status="active",
                created_at=now - timedelta(days=31),
                spec={
                    "resource_requirements": {"cpu": "1", "memory": "2Gi"},
                    "target": {"cloud": "aws", "region": "us-east-1"},
                },
            )
            session.add(deployment)
            await session.flush()
            session.add(
                UsageDeploymentRow(
                    deployment_id=deployment.id,
                    owner_id=owner.id,
                    snapshot=to_deployment(deployment).model_dump(mode="json"),
                    model_size_bytes=0,
                    last_report_at=now,
                )
            )
            await session.flush()
            hours = [
                {
                    "deployment_id": deployment.id,
                    "hour": now - timedelta(hours=k),
                    **_usage(3000, 3600.0),
                }
                for k in range(1, 30 * 24 + 1)
            ]
            minutes = [
                {
                    "deployment_id": deployment.id,
                    "instance_id": "pod-0",
                    "minute": cutoff + timedelta(minutes=k),
                    **_usage(50, 60.0),
                }
                for k in range(int(RETENTION.total_seconds() // 60))
            ]
            await session.execute(insert(UsageHourRow), hours)
            await session.execute(insert(UsageMinuteRow), minutes)
            rows += len(hours) + len(minutes)
    return owner.id, rows


async def _timed(action: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return times


async def _run(url: str, deployments: int) -> dict[str, Any]:
    database = Database(url)
    await database.migrate()
    started = time.perf_counter()
    owner, rows = await _seed(database, deployments)
    seed_seconds = time.perf_counter() - started
    options = PricingOptions(
        catalog=load_catalog(),
        regions={Cloud.AWS: "us-east-1", Cloud.GCP: "us-central1", Cloud.AZURE: "eastus"},
    )
    now = utc_now()
    window = Window(now - timedelta(days=30), now)

    async def analysis(kind: str) -> None:
        # Performance reads the weeks before the window too: its anomaly baselines reach there.
        reach = (
            Window(window.start - BASELINE_LOOKBACK, window.end)
            if kind == "performance"
            else window
        )
        async with database.session() as session:
            facts = await load_facts(session, owner)
            samples = await load_samples(session, list(facts), reach)
        if kind == "cost":
            analyze_cost(facts, samples, window, options)
        elif kind == "performance":
            limits = PerformanceThresholds()
            async with database.session() as session:
                detail = await load_threshold_minutes(session, list(facts), window, limits)
            analyze_performance(facts, samples, window, limits, detail)
        elif kind == "forecast":
            forecast_usage(facts, samples, window, 30, options)
        else:
            suggest(facts, samples, Window(now - timedelta(days=14), now), options)

    results: dict[str, Any] = {"rows": rows, "seed_seconds": round(seed_seconds, 2)}
    for kind in ("cost", "performance", "forecast", "suggestions"):
        times = await _timed(functools.partial(analysis, kind), 3)
        results[kind] = round(statistics.median(times), 3)

    async with database.session() as session:
        deployment_id = next(iter(await load_facts(session, owner)))
    base = floor_hour(now) - timedelta(hours=2)
    report = UsageReport.model_validate(
        {
            "instance_id": "pod-1",
            "minutes": [
                {"start": base + timedelta(minutes=k), **_usage(50, 60.0)} for k in range(60)
            ],
        }
    )

    async def ingest() -> None:
        async with database.session() as session:
            await record_usage(session, deployment_id, report, now=now, retention=RETENTION)

    ingest_times = sorted(await _timed(ingest, 50))
    results["ingest_p50"] = round(statistics.median(ingest_times) * 1000, 2)
    results["ingest_p99"] = round(
        ingest_times[min(len(ingest_times) - 1, int(0.99 * len(ingest_times)))] * 1000, 2
    )

    async def one_day_rollup() -> None:
        async with database.session() as session:
            await roll_up(session, now=now + timedelta(days=1), retention=RETENTION)

    results["rollup_one_day"] = round((await _timed(one_day_rollup, 1))[0], 3)
    await database.dispose()
    return results


def _postgres_url() -> tuple[str, Callable[[], None]]:
    import uuid

    import asyncpg  # type: ignore[import-untyped]

    admin = os.environ.get(
        "AIDEPLOY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    name = f"aideploy_bench_{uuid.uuid4().hex[:10]}"

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}", lambda: asyncio.run(
        run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=20)
    parser.add_argument("--postgres", action="store_true", help="Also measure on PostgreSQL.")
    arguments = parser.parse_args()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        runs["sqlite"] = asyncio.run(
            _run(f"sqlite+aiosqlite:///{folder}/bench.db", arguments.deployments)
        )
    if arguments.postgres:
        url, drop = _postgres_url()
        try:
            runs["postgresql"] = asyncio.run(_run(url, arguments.deployments))
        finally:
            drop()
    table = Table(
        title=f"Analytics: {arguments.deployments} deployments x 30 days (load {os.getloadavg()[0]:.1f})"
    )
    table.add_column("measure", style="bold")
    for database in runs:
        table.add_column(database, justify="right")
    table.add_column("bar")
    labels = {
        "rows": ("usage rows", ""),
        "cost": ("GET /analytics/cost (s)", f"< {BAR_SECONDS:g} s"),
        "performance": ("GET /analytics/performance (s)", f"< {BAR_SECONDS:g} s"),
        "forecast": ("GET /analytics/forecast (s)", f"< {BAR_SECONDS:g} s"),
        "suggestions": ("GET /analytics/suggestions (s)", f"< {BAR_SECONDS:g} s"),
        "ingest_p50": ("60-minute report, p50 (ms)", ""),
        "ingest_p99": ("60-minute report, p99 (ms)", ""),
        "rollup_one_day": ("roll-up of one day (s)", ""),
    }
    for key, (label, bar) in labels.items():
        cells = []
        for run in runs.values():
            value = run[key]
            over = bar and value >= BAR_SECONDS
            cells.append(f"[red]{value}[/]" if over else str(value))
        table.add_row(label, *cells, bar)
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "deployments": arguments.deployments,
                "bar_seconds": BAR_SECONDS,
                "load_average": os.getloadavg()[0],
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "runs": runs,
            },
            indent=2,
        )
    )
    console.print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
