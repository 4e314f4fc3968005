"""The usage endpoint and the four analytics endpoints over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import utc_now
from api.analytics.records import LATENCY_BOUNDS_MS, Window, floor_hour
from api.analytics.schemas import UsageReport
from api.analytics.store import load_samples, record_usage, roll_up
from api.analytics.tables import UsageHourRow, UsageMinuteRow
from api.analytics.tokens import usage_environment
from api.context import ApiContext
from api.db.engine import Database
from api.db.tables import DeploymentRow, UserRow

Client = AsyncTestClient[Litestar]


@asynccontextmanager
async def _session(context: ApiContext) -> AsyncIterator[AsyncSession]:
    """A session of our own engine: the app's engine belongs to the test client's event loop."""
    database = Database(context.settings.effective_database_url)
    try:
        async with database.session() as session:
            yield session
    finally:
        await database.dispose()


async def _deployment(context: ApiContext, username: str, name: str) -> str:
    """An active AWS Kubernetes deployment of ``username``, written straight to the database."""
    async with _session(context) as session:
        owner = await session.scalar(select(UserRow.id).where(UserRow.username == username))
        assert owner is not None
        row = DeploymentRow(
            owner_id=owner,
            name=name,
            model_id="no-model",
            model_type="original",
            deployment_type="kubernetes",
            status="active",
            created_at=utc_now() - timedelta(days=3),
            spec={
                "resource_requirements": {"cpu": "1", "memory": "2Gi"},
                "target": {"cloud": "aws", "region": "us-east-1"},
            },
        )
        session.add(row)
    return row.id


def _minute(
    start: datetime, requests: int = 60, errors: int = 0, latency_ms: float = 40.0
) -> dict[str, Any]:
    buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    buckets[6 if latency_ms <= 50 else 11] = requests
    return {
        "start": start.isoformat(),
        "requests": requests,
        "errors": errors,
        "latency_ms_sum": latency_ms * requests,
        "latency_buckets": buckets,
        "instance_seconds": 60,
        "cpu_seconds": 30,
        "memory_byte_seconds": 60 * 2**29,
        "memory_peak_bytes": 2**29,
        "bytes_out": 1000 * requests,
    }


def _recent_minutes(count: int) -> list[datetime]:
    now = utc_now().replace(second=0, microsecond=0)
    return [now - timedelta(minutes=count - k) for k in range(count)]


def _token_header(context: ApiContext, deployment_id: str) -> dict[str, str]:
    token = usage_environment(context.settings, deployment_id)["AIDEPLOY_SERVE_USAGE_TOKEN"]
    return {"Authorization": f"Bearer {token}"}


async def test_usage_needs_the_deployments_own_token(
    client: Client, context: ApiContext, alice: dict[str, str]
) -> None:
    mine = await _deployment(context, "alice", "mine")
    other = await _deployment(context, "alice", "other")
    body = {"instance_id": "pod-1", "minutes": [_minute(_recent_minutes(1)[0])]}
    url = f"/deployments/{mine}/usage"
    assert (await client.post(url, json=body)).status_code == 401
    assert (await client.post(url, json=body, headers=alice)).status_code == 401
    assert (
        await client.post(url, json=body, headers=_token_header(context, other))
    ).status_code == 401
    accepted = await client.post(url, json=body, headers=_token_header(context, mine))
    assert accepted.status_code == 202, accepted.text
    receipt = accepted.json()
    assert (receipt["accepted"], receipt["skipped"]) == (1, 0)
    retention = timedelta(days=context.settings.usage_minute_retention_days)
    assert datetime.fromisoformat(receipt["accepted_from"]) == floor_hour(utc_now() - retention)


async def test_bad_reports_name_the_field(client: Client, context: ApiContext) -> None:
    deployment = await _deployment(context, "alice", "mine")
    minute = _minute(_recent_minutes(1)[0], requests=5, errors=9)
    response = await client.post(
        f"/deployments/{deployment}/usage",
        json={"instance_id": "pod-1", "minutes": [minute]},
        headers=_token_header(context, deployment),
    )
    assert response.status_code in (400, 422)
    assert "errors (9) exceed requests (5)" in response.text


async def _report(
    client: Client, context: ApiContext, deployment: str, minutes: list[dict[str, Any]]
) -> None:
    response = await client.post(
        f"/deployments/{deployment}/usage",
        json={"instance_id": "pod-1", "minutes": minutes},
        headers=_token_header(context, deployment),
    )
    assert response.status_code == 202, response.text


async def test_reports_are_idempotent_and_thresholds_judged_per_minute(
    client: Client, context: ApiContext, alice: dict[str, str]
) -> None:
    deployment = await _deployment(context, "alice", "mine")
    starts = _recent_minutes(30)
    minutes = [
        _minute(start, latency_ms=1_500.0 if k == 12 else 40.0) for k, start in enumerate(starts)
    ]
    for _ in range(2):  # sent twice (a retry): stored once
        response = await client.post(
            f"/deployments/{deployment}/usage",
            json={"instance_id": "pod-1", "minutes": minutes},
            headers=_token_header(context, deployment),
        )
        assert response.json()["accepted"] == 30
    performance = (await client.get("/analytics/performance", headers=alice)).json()
    assert performance["total_requests"] == 30 * 60
    mean = (29 * 40.0 + 1_500.0) / 30
    stats = performance["performance_by_deployment"][deployment]
    assert stats["avg_latency"] == pytest.approx(mean, abs=1e-3)
    [slow] = performance["anomalies"][deployment]  # judged per minute, not per hour
    assert slow["type"] == "high_latency"
    assert datetime.fromisoformat(slow["timestamp"]) == starts[12]
    lenient = await client.get(
        "/analytics/performance", params={"latency_threshold": 2000}, headers=alice
    )
    assert lenient.json()["anomalies"] == {}
    cost = (await client.get("/analytics/cost", headers=alice)).json()
    assert cost["cost_by_deployment"][deployment] > 0
    assert cost["priced_as"][deployment] == "aws/us-east-1"
    assert set(cost["comparison"]["savings_percentage"]) == {"aws", "azure", "gcp"}

    forecast = await client.get("/analytics/forecast", params={"days": 7}, headers=alice)
    assert forecast.status_code == 200, forecast.text
    assert forecast.json()["forecast_by_deployment"][deployment]["current_requests"] == 1800
    suggestions = await client.get("/analytics/suggestions", headers=alice)
    assert suggestions.status_code == 200, suggestions.text


async def test_each_owner_sees_only_their_own_analytics(
    client: Client, context: ApiContext, alice: dict[str, str], bob: dict[str, str]
) -> None:
    """Both users have usage; each of the four endpoints shows each of them exactly their own
    deployment and totals, and never the other's id."""
    mine = await _deployment(context, "alice", "mine")
    theirs = await _deployment(context, "bob", "theirs")
    await _report(client, context, mine, [_minute(start) for start in _recent_minutes(20)])
    await _report(
        client, context, theirs, [_minute(start, requests=30) for start in _recent_minutes(10)]
    )
    for headers, own, other, requests in ((alice, mine, theirs, 20 * 60), (bob, theirs, mine, 300)):
        responses = {
            path: await client.get(f"/analytics/{path}", headers=headers)
            for path in ("cost", "performance", "forecast", "suggestions")
        }
        for path, response in responses.items():
            assert response.status_code == 200, (path, response.text)
            assert other not in response.text, path
        cost = responses["cost"].json()
        assert set(cost["cost_by_deployment"]) == {own}
        assert cost["cost_by_deployment"][own] > 0
        performance = responses["performance"].json()
        assert set(performance["performance_by_deployment"]) == {own}
        assert performance["total_requests"] == requests
        forecast = responses["forecast"].json()
        assert set(forecast["forecast_by_deployment"]) == {own}
        assert forecast["forecast_by_deployment"][own]["current_requests"] == requests
        suggestions = responses["suggestions"].json()
        assert set(suggestions["suggestions_by_deployment"]) == {own}


async def test_low_traffic_errors_are_caught_by_the_hour(
    client: Client, context: ApiContext, alice: dict[str, str]
) -> None:
    """10 requests a minute (600 an hour) at 30 % errors: no minute is big enough to judge, the
    hours are."""
    deployment = await _deployment(context, "alice", "quiet")
    starts = _recent_minutes(60)
    await _report(
        client, context, deployment, [_minute(start, requests=10, errors=3) for start in starts]
    )
    performance = (await client.get("/analytics/performance", headers=alice)).json()
    [anomaly] = performance["anomalies"][deployment]
    assert anomaly["type"] == "high_error_rate"
    assert anomaly["message"] == "High error rate detected: 30.0% (threshold: 5%)"
    assert datetime.fromisoformat(anomaly["timestamp"]) == floor_hour(starts[0])


async def test_a_short_window_is_judged_against_the_weeks_before_it(
    client: Client, context: ApiContext, alice: dict[str, str]
) -> None:
    """Five days of steady hours and a spike 20 hours ago: asked about the last day only, the
    spike is still judged against the days before it, and reported."""
    deployment = await _deployment(context, "alice", "steady")
    now = utc_now()
    last = floor_hour(now) - timedelta(hours=1)
    spike = floor_hour(now) - timedelta(hours=20)
    minutes = [
        _minute(hour, requests=4_000 if hour == spike else 1_000)
        for hour in (last - timedelta(hours=k) for k in range(5 * 24))
    ]  # one minute per hour: the hour holds what that minute did
    report = UsageReport.model_validate({"instance_id": "pod-1", "minutes": minutes})
    async with _session(context) as session:
        await record_usage(session, deployment, report, now=now, retention=timedelta(days=30))
    response = await client.get(
        "/analytics/performance",
        params={"start_time": (now - timedelta(days=1)).isoformat()},
        headers=alice,
    )
    assert response.status_code == 200, response.text
    anomalies = response.json()["anomalies"][deployment]
    assert [(item["type"], datetime.fromisoformat(item["timestamp"])) for item in anomalies] == [
        ("request_spike", spike)
    ]


async def test_query_parameters_are_validated(client: Client, alice: dict[str, str]) -> None:
    assert (await client.get("/analytics/forecast?days=0", headers=alice)).status_code == 422
    assert (await client.get("/analytics/forecast?days=366", headers=alice)).status_code == 422
    backwards = await client.get(
        "/analytics/cost",
        params={"start_time": "2026-02-01T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"},
        headers=alice,
    )
    assert backwards.status_code in (400, 422)
    assert "end_time" in backwards.text
    assert (await client.get("/analytics/cost")).status_code == 401


async def test_roll_up_keeps_the_totals(context: ApiContext) -> None:
    deployment = await _deployment(context, "alice", "mine")
    start = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    minutes = [_minute(start + timedelta(minutes=k)) for k in range(150)]  # 10:00-12:30
    report = UsageReport.model_validate({"instance_id": "pod-1", "minutes": minutes})
    retention = timedelta(days=7)
    window = Window(start - timedelta(days=1), start + timedelta(days=1))
    async with _session(context) as session:
        stored = await record_usage(
            session, deployment, report, now=start + timedelta(hours=3), retention=retention
        )
        assert stored.accepted == 150
        before = await load_samples(session, [deployment], window)
        later = start + timedelta(days=7, hours=2)  # 10:00 and 11:00 are past the retention
        assert await roll_up(session, now=later, retention=retention) == 120
        hours = await session.scalar(select(func.count()).select_from(UsageHourRow))
        left = await session.scalar(select(func.count()).select_from(UsageMinuteRow))
        after = await load_samples(session, [deployment], window)
        late = await record_usage(session, deployment, report, now=later, retention=retention)
    assert (hours, left) == (3, 30)  # hours are kept current; only old minutes go
    assert sum(sample.requests for sample in after) == sum(s.requests for s in before) == 9000
    assert sum(sample.bytes_out for sample in after) == sum(s.bytes_out for s in before)
    assert late.skipped == 120  # minutes of hours already rolled up are too late


async def test_instances_add_up_and_resent_minutes_do_not(context: ApiContext) -> None:
    deployment = await _deployment(context, "alice", "mine")
    start = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    minutes = [_minute(start + timedelta(minutes=k), requests=10) for k in range(30)]
    now, retention = start + timedelta(hours=1), timedelta(days=7)
    window = Window(start, now)
    async with _session(context) as session:
        for instance in ("pod-a", "pod-b", "pod-a"):  # pod-a's report arrives twice
            report = UsageReport.model_validate({"instance_id": instance, "minutes": minutes})
            await record_usage(session, deployment, report, now=now, retention=retention)
        [hour] = await load_samples(session, [deployment], window)
    assert hour.requests == 2 * 30 * 10
    assert hour.instance_seconds == 2 * 30 * 60
    assert hour.memory_peak_bytes == 2**29  # the largest one instance had, not a sum


async def test_usage_outlives_its_deployment_but_not_its_owner(
    client: Client, context: ApiContext, alice: dict[str, str]
) -> None:
    """A deleted deployment's cost stays in its period (up to its last report); it has no
    forecast nor suggestions; deleting the user removes its usage."""
    deployment = await _deployment(context, "alice", "gone")
    minutes = [_minute(start) for start in _recent_minutes(20)]
    response = await client.post(
        f"/deployments/{deployment}/usage",
        json={"instance_id": "pod-1", "minutes": minutes},
        headers=_token_header(context, deployment),
    )
    assert response.status_code == 202
    before = (await client.get("/analytics/cost", headers=alice)).json()
    async with _session(context) as session:
        await session.delete(await session.get(DeploymentRow, deployment))
    after = (await client.get("/analytics/cost", headers=alice)).json()
    assert after["cost_by_deployment"][deployment] > 0
    assert after["cost_by_deployment"][deployment] <= before["cost_by_deployment"][deployment]
    performance = (await client.get("/analytics/performance", headers=alice)).json()
    assert performance["total_requests"] == 20 * 60
    forecast = (await client.get("/analytics/forecast", headers=alice)).json()
    assert deployment not in forecast["forecast_by_deployment"]
    late = await client.post(
        f"/deployments/{deployment}/usage",
        json={"instance_id": "pod-1", "minutes": minutes},
        headers=_token_header(context, deployment),
    )
    assert late.status_code == 404
    async with _session(context) as session:
        await session.delete(
            await session.scalar(select(UserRow).where(UserRow.username == "alice"))
        )
    async with _session(context) as session:
        left = await session.scalar(select(func.count()).select_from(UsageHourRow))
    assert left == 0
