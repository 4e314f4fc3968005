"""Usage storage: idempotent ingestion of minute reports, the hourly roll-up, and the queries the
analytics endpoints run (always for one owner's deployments)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.schema import ModelType, utc_now
from api.analytics.records import DeploymentFacts, UsageSample, Window, floor_hour, merge
from api.analytics.schemas import UsageReceipt, UsageReport
from api.analytics.tables import USAGE_COLUMNS, UsageHourRow, UsageMinuteRow, usage_values
from api.db.engine import Database
from api.db.tables import DeploymentRow, ModelRow, OptimizedModelRow
from api.deployments.service import to_deployment

__all__ = [
    "RollupScheduler",
    "load_facts",
    "load_samples",
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
    session: AsyncSession, table: Any, keys: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    insert = _insert_for(session)
    for index in range(0, len(rows), _CHUNK):
        statement = insert(table).values(rows[index : index + _CHUNK])
        statement = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: statement.excluded[name] for name in USAGE_COLUMNS},
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
    """Store a report's minutes, replacing earlier copies of the same instance's minutes."""
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
        await _upsert(session, UsageMinuteRow, ("deployment_id", "instance_id", "minute"), rows)
    return UsageReceipt(accepted=len(rows), skipped=len(report.minutes) - len(rows))


def _sample(row: UsageMinuteRow | UsageHourRow, start: datetime, seconds: int) -> UsageSample:
    values = usage_values(row)
    values["latency_buckets"] = tuple(values["latency_buckets"] or ())
    return UsageSample(deployment_id=row.deployment_id, start=start, seconds=seconds, **values)


def _row_values(sample: UsageSample) -> dict[str, Any]:
    return {
        "requests": sample.requests,
        "errors": sample.errors,
        "latency_ms_sum": sample.latency_ms_sum,
        "latency_buckets": list(sample.latency_buckets),
        "instance_seconds": sample.instance_seconds,
        "cpu_seconds": sample.cpu_seconds,
        "memory_byte_seconds": sample.memory_byte_seconds,
        "memory_peak_bytes": sample.memory_peak_bytes,
        "bytes_out": sample.bytes_out,
    }


async def roll_up(session: AsyncSession, *, now: datetime, retention: timedelta) -> int:
    """Merge minutes older than the retention into hourly rows and delete them; returns how
    many minute rows were rolled up. A late minute of an hour already rolled up is added to it."""
    cutoff = retention_cutoff(now, retention)
    minutes = list(
        await session.scalars(select(UsageMinuteRow).where(UsageMinuteRow.minute < cutoff))
    )
    if not minutes:
        return 0
    groups: dict[tuple[str, datetime], list[UsageSample]] = {}
    for row in minutes:
        groups.setdefault((row.deployment_id, floor_hour(row.minute)), []).append(
            _sample(row, row.minute, 60)
        )
    existing = await session.scalars(
        select(UsageHourRow).where(
            tuple_(UsageHourRow.deployment_id, UsageHourRow.hour).in_(list(groups))
        )
    )
    for hour_row in existing:
        groups[(hour_row.deployment_id, hour_row.hour)].append(
            _sample(hour_row, hour_row.hour, 3600)
        )
    hours = [
        {
            "deployment_id": deployment_id,
            "hour": hour,
            **_row_values(merge(deployment_id, hour, 3600, parts)),
        }
        for (deployment_id, hour), parts in groups.items()
    ]
    await _upsert(session, UsageHourRow, ("deployment_id", "hour"), hours)
    await session.execute(delete(UsageMinuteRow).where(UsageMinuteRow.minute < cutoff))
    return len(minutes)


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
                log.info("rolled %d usage minute(s) up into hours", count)
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
    sizes = dict(found.tuples().all())
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
    """The owner's deployments: the only ones an analysis may look at."""
    rows = list(
        await session.scalars(
            select(DeploymentRow)
            .where(DeploymentRow.owner_id == owner_id)
            .order_by(DeploymentRow.created_at)
        )
    )
    sizes = await _model_sizes(session, rows)
    return {row.id: DeploymentFacts(to_deployment(row), sizes[row.id]) for row in rows}


async def load_samples(
    session: AsyncSession, deployment_ids: Sequence[str], window: Window
) -> list[UsageSample]:
    """Hourly rows and not-yet-rolled-up minutes of these deployments inside ``window``."""
    if not deployment_ids:
        return []
    hours = await session.scalars(
        select(UsageHourRow).where(
            UsageHourRow.deployment_id.in_(deployment_ids),
            UsageHourRow.hour >= window.start,
            UsageHourRow.hour < window.end,
        )
    )
    minutes = await session.scalars(
        select(UsageMinuteRow).where(
            UsageMinuteRow.deployment_id.in_(deployment_ids),
            UsageMinuteRow.minute >= window.start,
            UsageMinuteRow.minute < window.end,
        )
    )
    per_minute: dict[tuple[str, datetime], list[UsageSample]] = {}
    for row in minutes:  # one sample per minute, all instances together
        per_minute.setdefault((row.deployment_id, row.minute), []).append(
            _sample(row, row.minute, 60)
        )
    return [_sample(row, row.hour, 3600) for row in hours] + [
        merge(deployment_id, minute, 60, parts)
        for (deployment_id, minute), parts in per_minute.items()
    ]
