"""usage tables for analytics: per-minute reports and hourly roll-ups

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import advanced_alchemy.types.datetime
import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _usage_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.Column("latency_buckets", sa.JSON(), nullable=False),
        sa.Column("instance_seconds", sa.Float(), nullable=False),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("memory_byte_seconds", sa.Float(), nullable=False),
        sa.Column("memory_peak_bytes", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
    ]


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(
        name, advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "usage_minutes",
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=64), nullable=False),
        _timestamp("minute"),
        *_usage_columns(),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("deployment_id", "instance_id", "minute"),
    )
    op.create_index(
        "ix_usage_minutes_deployment_minute", "usage_minutes", ["deployment_id", "minute"]
    )
    op.create_table(
        "usage_hours",
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        _timestamp("hour"),
        *_usage_columns(),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("deployment_id", "hour"),
    )


def downgrade() -> None:
    op.drop_table("usage_hours")
    op.drop_index("ix_usage_minutes_deployment_minute", table_name="usage_minutes")
    op.drop_table("usage_minutes")
