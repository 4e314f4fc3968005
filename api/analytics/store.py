"""Usage storage: idempotent ingestion of minute reports, the hourly roll-up, and the queries the
analytics endpoints run (always for one owner's deployments)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import Deployment, ModelType, utc_now
from api.analytics.performance import PerformanceThresholds
from api.analytics.records import DeploymentFacts, UsageSample, Window, floor_hour, merge
from api.analytics.schemas import UsageReceipt, UsageReport
from api.analytics.tables import USAGE_COLUMNS, UsageDeploymentRow, UsageHourRow, UsageMinuteRow
from api.db.engine import Database
from api.db.tables import DeploymentRow, ModelRow, OptimizedModelRow
from api.deployments.service import to_deployment

__all__ = [
    "RollupScheduler",
    "load_facts",
    "load_samples",
    "load_threshold_minutes",
    "record_usage",
    "roll_up",
]

log = logging.getLogger("aideploy.api.analytics")

_FUTURE_TOLERANCE = timedelta(minutes=5)
"""Clock skew allowed between an instance and the API."""
_CHUNK = 500


def _insert_for(session: AsyncSession) -> Any:
    """The dialect's ``INSERT ... ON CONFLICT`` (SQLite and PostgreSQL share the syntax)."""
    dialect = session.get_bind().dialect.name
    return postgresql_insert if dialect == "postgresql" else sqlite_insert


async def _upsert(
    session: AsyncSession,
    table: Any,
    keys: Sequence[str],
    rows: list[dict[str, Any]],
    columns: Sequence[str] = USAGE_COLUMNS,
) -> None:
    """Insert ``rows``; where a key exists, replace its ``columns``."""
    insert = _insert_for(session)
    for index in range(0, len(rows), _CHUNK):
        statement = insert(table).values(rows[index : index + _CHUNK])
        statement = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: statement.excluded[name] for name in columns},
        )
        await session.execute(statement)


def retention_cutoff(now: datetime, retention: timedelta) -> datetime:
    """Minutes before this hour are rolled up; reports for them are too late to accept."""
    return floor_hour(now - retention)


async def record_usage(
    session: AsyncSession,
    deployment_id: str,
    report: UsageReport,
    *,
    now: datetime,
    retention: timedelta,
) -> UsageReceipt:
    """Store a report's minutes (replacing earlier copies of the same instance's minutes) and
    bring the hours they fall in up to date."""
    cutoff = retention_cutoff(now, retention)
    rows = [
        {
            "deployment_id": deployment_id,
            "instance_id": report.instance_id,
            "minute": minute.start,
            **minute.model_dump(exclude={"start"}),
        }
        for minute in report.minutes
        if cutoff <= minute.start <= now + _FUTURE_TOLERANCE
    ]
    if rows:
        # One report of a deployment at a time (a row lock on PostgreSQL; SQLite has one writer):
        # each recomputed hour then sees every instance's committed minutes, never a stale mix.
        deployment = await session.scalar(
            select(DeploymentRow).where(DeploymentRow.id == deployment_id).with_for_update()
        )
        if deployment is None:
            raise LookupError(f"deployment {deployment_id} not found")
        await _snapshot(session, deployment, now)
        await _upsert(session, UsageMinuteRow, ("deployment_id", "instance_id", "minute"), rows)
        await _refresh_hours(session, deployment_id, {floor_hour(row["minute"]) for row in rows})
    return UsageReceipt(
        accepted=len(rows), skipped=len(report.minutes) - len(rows), accepted_from=cutoff
    )


async def _snapshot(session: AsyncSession, row: DeploymentRow, now: datetime) -> None:
    """Keep what prices this deployment's usage after it is deleted."""
    sizes = await _model_sizes(session, [row])
    values = {
        "deployment_id": row.id,
        "owner_id": row.owner_id,
        "snapshot": to_deployment(row).model_dump(mode="json"),
        "model_size_bytes": sizes[row.id],
        "last_report_at": now,
    }
    await _upsert(
        session,
        UsageDeploymentRow,
        ("deployment_id",),
        [values],
        ("snapshot", "model_size_bytes", "last_report_at"),
    )


_MINUTE_COLUMNS = [getattr(UsageMinuteRow, name) for name in USAGE_COLUMNS]
_HOUR_COLUMNS = [getattr(UsageHourRow, name) for name in USAGE_COLUMNS]


def _sample(
    deployment_id: str, start: datetime, seconds: int, values: Sequence[Any]
) -> UsageSample:
    """A sample from a row's usage columns, in :data:`USAGE_COLUMNS` order."""
    fields = dict(zip(USAGE_COLUMNS, values, strict=True))
    fields["latency_buckets"] = tuple(fields["latency_buckets"] or ())
    return UsageSample(deployment_id=deployment_id, start=start, seconds=seconds, **fields)


def _row_values(sample: UsageSample) -> dict[str, Any]:
    return {
        name: list(sample.latency_buckets) if name == "latency_buckets" else getattr(sample, name)
        for name in USAGE_COLUMNS
    }


async def _refresh_hours(session: AsyncSession, deployment_id: str, hours: set[datetime]) -> None:
    """Recompute these hours of the deployment from all instances' minutes (idempotent)."""
    found = await session.execute(
        select(UsageMinuteRow.minute, *_MINUTE_COLUMNS).where(
            UsageMinuteRow.deployment_id == deployment_id,
            UsageMinuteRow.minute >= min(hours),
            UsageMinuteRow.minute < max(hours) + timedelta(hours=1),
        )
    )
    parts: dict[datetime, list[UsageSample]] = {}
    for minute, *values in found:
        hour = floor_hour(minute)
        if hour in hours:
            parts.setdefault(hour, []).append(_sample(deployment_id, minute, 60, values))
    rows = [
        {
            "deployment_id": deployment_id,
            "hour": hour,
            **_row_values(merge(deployment_id, hour, 3600, items)),
        }
        for hour, items in parts.items()
    ]
    await _upsert(session, UsageHourRow, ("deployment_id", "hour"), rows)


async def roll_up(session: AsyncSession, *, now: datetime, retention: timedelta) -> int:
    """Delete minutes older than the retention (their hours are kept up to date on every report,
    so nothing is lost); returns how many minute rows were removed."""
    result = await session.execute(
        delete(UsageMinuteRow).where(UsageMinuteRow.minute < retention_cutoff(now, retention))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


class RollupScheduler:
    """Runs the roll-up in the background at most every ``every`` seconds, off the request path."""

    def __init__(self, every: float = 600.0) -> None:
        self._every = every
        self._last = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def maybe_start(self, database: Database, retention: timedelta) -> None:
        if time.monotonic() - self._last < self._every or (self._task and not self._task.done()):
            return
        self._last = time.monotonic()
        self._task = asyncio.create_task(self._run(database, retention), name="usage-rollup")

    async def _run(self, database: Database, retention: timedelta) -> None:
        try:
            async with database.session() as session:
                count = await roll_up(session, now=utc_now(), retention=retention)
            if count:
                log.info("removed %d usage minute(s) past the retention", count)
        except Exception:
            log.exception("usage roll-up failed; it is retried later")


async def _model_sizes(session: AsyncSession, rows: Iterable[DeploymentRow]) -> dict[str, int]:
    """Bytes of each deployment's served artifact (an optimized one from its measured reduction)."""
    rows = list(rows)
    optimized_ids = [row.model_id for row in rows if row.model_type == ModelType.OPTIMIZED.value]
    optimized = {
        item.id: item
        for item in await session.scalars(
            select(OptimizedModelRow).where(OptimizedModelRow.id.in_(optimized_ids))
        )
    }
    original_ids = {row.model_id for row in rows if row.model_type == ModelType.ORIGINAL.value}
    original_ids |= {item.original_model_id for item in optimized.values()}
    found = await session.execute(
        select(ModelRow.id, ModelRow.size_bytes).where(ModelRow.id.in_(original_ids))
    )
    sizes = dict(found.all())
    result: dict[str, int] = {}
    for row in rows:
        if row.model_type == ModelType.ORIGINAL.value:
            result[row.id] = sizes.get(row.model_id, 0)
            continue
        item = optimized.get(row.model_id)
        base = sizes.get(item.original_model_id, 0) if item else 0
        reduction = (item.size_reduction_percentage or 0.0) if item else 0.0
        result[row.id] = int(base * (1 - reduction / 100))
    return result


async def load_facts(session: AsyncSession, owner_id: str) -> dict[str, DeploymentFacts]:
    """The owner's deployments, and the deleted ones that reported usage: the only ones an
    analysis may look at. A deleted deployment's life ends at its last report."""
    rows = list(
        await session.scalars(
            select(DeploymentRow)
            .where(DeploymentRow.owner_id == owner_id)
            .order_by(DeploymentRow.created_at)
        )
    )
    sizes = await _model_sizes(session, rows)
    facts = {row.id: DeploymentFacts(to_deployment(row), sizes[row.id]) for row in rows}
    gone = await session.scalars(
        select(UsageDeploymentRow).where(
            UsageDeploymentRow.owner_id == owner_id,
            UsageDeploymentRow.deployment_id.not_in(list(facts)),
        )
    )
    for item in gone:
        if item.snapshot:  # empty for usage recorded before snapshots existed
            facts[item.deployment_id] = DeploymentFacts(
                Deployment.model_validate(item.snapshot),
                item.model_size_bytes,
                ended_at=item.last_report_at,
            )
    return facts


async def load_samples(
    session: AsyncSession, deployment_ids: Sequence[str], window: Window
) -> list[UsageSample]:
    """The hourly usage of these deployments inside ``window``."""
    if not deployment_ids:
        return []
    found = await session.execute(
        select(UsageHourRow.deployment_id, UsageHourRow.hour, *_HOUR_COLUMNS).where(
            UsageHourRow.deployment_id.in_(deployment_ids),
            UsageHourRow.hour >= window.start,
            UsageHourRow.hour < window.end,
        )
    )
    return [_sample(deployment_id, hour, 3600, values) for deployment_id, hour, *values in found]


async def load_threshold_minutes(
    session: AsyncSession,
    deployment_ids: Sequence[str],
    window: Window,
    limits: PerformanceThresholds,
) -> list[UsageSample]:
    """Only the minutes (all instances together) that break a threshold: the database filters,
    so a week of minutes of many deployments never travels to Python."""
    if not deployment_ids:
        return []
    requests = func.sum(UsageMinuteRow.requests)
    found = await session.execute(
        select(
            UsageMinuteRow.deployment_id,
            UsageMinuteRow.minute,
            requests,
            func.sum(UsageMinuteRow.errors),
            func.sum(UsageMinuteRow.latency_ms_sum),
        )
        .where(
            UsageMinuteRow.deployment_id.in_(deployment_ids),
            UsageMinuteRow.minute >= window.start,
            UsageMinuteRow.minute < window.end,
        )
        .group_by(UsageMinuteRow.deployment_id, UsageMinuteRow.minute)
        .having(
            requests >= limits.min_requests,
            or_(
                func.sum(UsageMinuteRow.errors) * 100.0 > requests * limits.error_rate_percent,
                func.sum(UsageMinuteRow.latency_ms_sum) > requests * limits.latency_ms,
            ),
        )
    )
    return [
        UsageSample(
            deployment_id=deployment_id,
            start=minute,
            seconds=60,
            requests=int(count),
            errors=int(errors),
            latency_ms_sum=float(latency),
        )
        for deployment_id, minute, count, errors, latency in found
    ]
