"""The tables. Every resource row carries ``owner_id``: queries always filter on it, so another
user's resource is simply not found.

One definition serves SQLite and PostgreSQL: advanced-alchemy's ``DateTimeUTC`` keeps datetimes
timezone-aware on both, and JSON columns are ``JSONB`` on PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aideploy.schema import utc_now


def new_id() -> str:
    """Resource identifiers: random UUIDs as text, opaque to clients."""
    return str(uuid.uuid4())


_JSON = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTimeUTC(timezone=True), dict[str, Any]: _JSON}


class _Timestamps:
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)


class UserRow(_Timestamps, Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(default=False)


class ModelRow(_Timestamps, Base):
    __tablename__ = "models"
    __table_args__ = (Index("ix_models_owner_created_id", "owner_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    framework: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(Text)
    """The upload as it arrived (the seed's ``storage_path``)."""
    serving_path: Mapped[str | None] = mapped_column(Text, default=None)
    """The ONNX the serving runtime loads: the upload itself, or its conversion at upload (a
    PyTorch model). ``None`` only for PyTorch models uploaded before uploads were converted."""
    sample_data_path: Mapped[str | None] = mapped_column(Text, default=None)
    """The upload's example inputs (``.npz``, optional labels): calibration and evaluation
    data for its optimizations."""
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)


class OptimizedModelRow(_Timestamps, Base):
    __tablename__ = "optimized_models"
    __table_args__ = (Index("ix_optimized_models_original", "original_model_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    original_model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    optimization_method: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    storage_path: Mapped[str | None] = mapped_column(Text, default=None)
    size_reduction_percentage: Mapped[float | None] = mapped_column(default=None)
    latency_reduction_percentage: Mapped[float | None] = mapped_column(default=None)
    accuracy_change_percentage: Mapped[float | None] = mapped_column(default=None)
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The optimization request as submitted, so an interrupted job can run again."""
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)


class DeploymentRow(_Timestamps, Base):
    __tablename__ = "deployments"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_deployments_owner_name"),
        Index("ix_deployments_owner_created_id", "owner_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    model_id: Mapped[str] = mapped_column(String(36), index=True)
    """An uploaded model's id, or an optimized model's id when ``model_type`` is optimized."""
    model_type: Mapped[str] = mapped_column(String(16))
    deployment_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str | None] = mapped_column(Text, default=None)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """resource_requirements, scaling_policy, cost_optimization_policy and target, as JSON."""
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    runtime: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """What the runner needs to find the deployment again (stack name, local port...)."""
    version: Mapped[int] = mapped_column(default=0, server_default="0")
    """Bumped by every accepted operation: a change computed from an older read is refused."""


class DeploymentEventRow(Base):
    __tablename__ = "deployment_events"
    __table_args__ = (Index("ix_deployment_events_deployment", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    operation_id: Mapped[str] = mapped_column(String(36))
    """The job that produced the event: one operation (create, update, hibernate...)."""
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class JobRow(_Timestamps, Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status", "status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)


# Tables of other parts, defined beside their code, registered on the same metadata here.
from api.analytics import tables as _analytics_tables  # noqa: E402, F401
