"""The usage tables: per-minute rows as instances report them, and hourly rows.

A minute row is one instance's complete tally of one minute, keyed by (deployment, instance,
minute), so a report that is sent again (the reporter retries after a lost response) replaces
instead of counting twice. Every report recomputes the hours it touched from all instances'
minutes, so the hourly rows are always current and are what analyses read; minutes are kept for
the retention period only, to judge thresholds minute by minute, and then deleted (the roll-up).

Usage outlives its deployment: a cost already incurred stays in the cost of its period. So the
usage rows hang off ``usage_deployments`` (a snapshot of each reporting deployment, refreshed
by every report, owned by a user) rather than off ``deployments``; deleting a user removes it all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db.tables import Base


class _UsageColumns:
    """What an interval's usage is made of; every column is a sum except the memory peak."""

    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    latency_buckets: Mapped[list[int]] = mapped_column(JSON, default=list)
    instance_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    memory_byte_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    memory_peak_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)


USAGE_COLUMNS = (
    "requests",
    "errors",
    "latency_ms_sum",
    "latency_buckets",
    "instance_seconds",
    "cpu_seconds",
    "memory_byte_seconds",
    "memory_peak_bytes",
    "bytes_out",
)


class UsageDeploymentRow(Base):
    """The deployment as it was when it last reported: what prices its usage once it is gone."""

    __tablename__ = "usage_deployments"
    __table_args__ = (Index("ix_usage_deployments_owner", "owner_id"),)

    deployment_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    snapshot: Mapped[dict[str, Any]]
    """The deployment (``aideploy.schema.Deployment`` as JSON)."""
    model_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    last_report_at: Mapped[datetime]
    """When it last reported: a deleted deployment's life is taken to end there."""


class UsageMinuteRow(_UsageColumns, Base):
    __tablename__ = "usage_minutes"
    __table_args__ = (Index("ix_usage_minutes_deployment_minute", "deployment_id", "minute"),)

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("usage_deployments.deployment_id", ondelete="CASCADE"), primary_key=True
    )
    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(primary_key=True)


class UsageHourRow(_UsageColumns, Base):
    __tablename__ = "usage_hours"

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("usage_deployments.deployment_id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(primary_key=True)
