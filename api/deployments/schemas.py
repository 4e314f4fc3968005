"""Response types of the deployments API that are not part of the shared domain model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class DeploymentEvent(BaseModel):
    """*Extension*: one step of an operation (``GET /deployments/{id}/events``)."""

    id: int
    operation_id: str
    """The operation (create, update, hibernate, activate, delete) the event belongs to."""
    kind: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
