"""``aideploy analytics ...`` against a real API process on a free port, with a month of usage."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import select
from typer.testing import CliRunner

from aideploy.cli import app
from aideploy.schema import utc_now
from aideploy.settings import Settings
from api.analytics.records import floor_hour
from api.analytics.tables import UsageDeploymentRow, UsageHourRow
from api.app import create_app
from api.auth.service import create_user
from api.db.engine import Database
from api.db.tables import DeploymentRow, UserRow
from api.deployments.service import to_deployment
from tests.analytics.support import bucket_counts

runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _seed(settings: Settings) -> None:
    """Carol, with one deployment that served a growing, weekly-shaped month of traffic."""
    database = Database(settings.effective_database_url)
    await database.migrate()
    try:
        async with database.session() as session:
            await create_user(session, "carol", "carol-password")
        async with database.session() as session:
            owner = await session.scalar(select(UserRow.id).where(UserRow.username == "carol"))
            assert owner is not None
            now = floor_hour(utc_now())
            row = DeploymentRow(
                owner_id=owner,
                name="sentiment",
                model_id="no-model",
                model_type="original",
                deployment_type="kubernetes",
                status="active",
                created_at=now - timedelta(days=29),
                spec={
                    "resource_requirements": {"cpu": "2", "memory": "4Gi"},
                    "target": {"cloud": "gcp", "region": "us-central1"},
                },
            )
            session.add(row)
            await session.flush()
            session.add(
                UsageDeploymentRow(
                    deployment_id=row.id,
                    owner_id=owner,
                    snapshot=to_deployment(row).model_dump(mode="json"),
                    model_size_bytes=0,
                    last_report_at=now,
                )
            )
            await session.flush()
            for hours_ago in range(1, 28 * 24):
                start = now - timedelta(hours=hours_ago)
                weekend = start.weekday() >= 5
                requests = int((400 + 2 * (28 * 24 - hours_ago) / 24) * (0.4 if weekend else 1.0))
                session.add(
                    UsageHourRow(
                        deployment_id=row.id,
                        hour=start,
                        requests=requests,
                        errors=requests // 200,
                        latency_ms_sum=35.0 * requests,
                        latency_buckets=list(bucket_counts(requests, 35.0)),
                        instance_seconds=3600.0,
                        cpu_seconds=3600.0 * 2 * 0.1,
                        memory_byte_seconds=3600.0 * 2**30,
                        memory_peak_bytes=2**30,
                        bytes_out=2_000 * requests,
                    )
                )
    finally:
        await database.dispose()


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("cli-api"), api_port=_free_port())
    asyncio.run(_seed(settings))
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), port=settings.api_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.api_port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(10)


def _run(api_url: str, *arguments: str) -> str:
    result = runner.invoke(
        app,
        ["analytics", *arguments, "--api-url", api_url, "--username", "carol", "--password-stdin"],
        input="carol-password\n",
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_cost_and_its_chart(api_url: str, tmp_path: Path) -> None:
    chart = tmp_path / "cost.png"
    output = _run(api_url, "cost", "--chart", str(chart))
    assert "sentiment" in output
    assert "gcp/us-central1" in output
    assert "Vertex AI prediction" in output
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_forecast_and_its_chart(api_url: str, tmp_path: Path) -> None:
    chart = tmp_path / "forecast.png"
    output = _run(api_url, "forecast", "--days", "14", "--chart", str(chart))
    assert "trend_weekly" in output
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_performance_and_suggestions(api_url: str) -> None:
    assert "sentiment" in _run(api_url, "performance")
    suggestions = _run(api_url, "suggestions")
    assert "cpu_over_provisioned" in suggestions
    assert "2 -> 300m" in suggestions  # 10 % of 2 cores at 70 % target


def test_problems_are_one_line_and_exit_code_2(api_url: str) -> None:
    no_token = runner.invoke(app, ["analytics", "cost", "--api-url", api_url])
    assert no_token.exit_code == 2
    assert "no API token" in no_token.output
    bad = runner.invoke(app, ["analytics", "cost", "--api-url", api_url, "--token", "nope"])
    assert bad.exit_code == 2
    assert "HTTP 401" in bad.output
    down = runner.invoke(
        app, ["analytics", "cost", "--api-url", "http://127.0.0.1:9", "--token", "x"]
    )
    assert down.exit_code == 2
    assert "cannot reach the API" in down.output
