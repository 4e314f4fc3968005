"""usage outlives its deployment: usage rows hang off usage_deployments, not deployments

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import advanced_alchemy.types.datetime
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_USAGE = (
    "requests, errors, latency_ms_sum, latency_buckets, instance_seconds, cpu_seconds, "
    "memory_byte_seconds, memory_peak_bytes, bytes_out"
)


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


def _recreate(table: str, keys: list[sa.Column[object]], parent: str, parent_key: str) -> None:
    """Rebuild a usage table with its foreign key on ``parent`` (portable: no constraint
    names to guess), keeping its rows."""
    op.rename_table(table, f"{table}_old")
    if table == "usage_minutes":
        op.drop_index("ix_usage_minutes_deployment_minute", table_name=f"{table}_old")
    names = [column.name for column in keys]
    op.create_table(
        table,
        *keys,
        *_usage_columns(),
        sa.ForeignKeyConstraint(["deployment_id"], [f"{parent}.{parent_key}"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*names),
    )
    columns = ", ".join(names) + ", " + _USAGE
    op.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_old")  # noqa: S608
    op.drop_table(f"{table}_old")
    if table == "usage_minutes":
        op.create_index("ix_usage_minutes_deployment_minute", table, ["deployment_id", "minute"])


def upgrade() -> None:
    op.create_table(
        "usage_deployments",
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column(
            "snapshot",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("model_size_bytes", sa.BigInteger(), nullable=False),
        _timestamp("last_report_at"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("deployment_id"),
    )
    op.create_index("ix_usage_deployments_owner", "usage_deployments", ["owner_id"])
    # Deployments that reported before this revision get an empty snapshot, filled in by their
    # next report (until then they are priced from their live row, as before).
    op.execute(
        "INSERT INTO usage_deployments (deployment_id, owner_id, snapshot, model_size_bytes, "
        "last_report_at) SELECT id, owner_id, '{}', 0, updated_at FROM deployments "
        "WHERE id IN (SELECT deployment_id FROM usage_hours UNION "
        "SELECT deployment_id FROM usage_minutes)"
    )
    _recreate(
        "usage_minutes",
        [
            sa.Column("deployment_id", sa.String(length=36), nullable=False),
            sa.Column("instance_id", sa.String(length=64), nullable=False),
            _timestamp("minute"),
        ],
        "usage_deployments",
        "deployment_id",
    )
    _recreate(
        "usage_hours",
        [sa.Column("deployment_id", sa.String(length=36), nullable=False), _timestamp("hour")],
        "usage_deployments",
        "deployment_id",
    )


def downgrade() -> None:
    op.execute("DELETE FROM usage_minutes WHERE deployment_id NOT IN (SELECT id FROM deployments)")
    op.execute("DELETE FROM usage_hours WHERE deployment_id NOT IN (SELECT id FROM deployments)")
    _recreate(
        "usage_minutes",
        [
            sa.Column("deployment_id", sa.String(length=36), nullable=False),
            sa.Column("instance_id", sa.String(length=64), nullable=False),
            _timestamp("minute"),
        ],
        "deployments",
        "id",
    )
    _recreate(
        "usage_hours",
        [sa.Column("deployment_id", sa.String(length=36), nullable=False), _timestamp("hour")],
        "deployments",
        "id",
    )
    op.drop_index("ix_usage_deployments_owner", table_name="usage_deployments")
    op.drop_table("usage_deployments")
