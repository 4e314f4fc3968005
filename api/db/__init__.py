"""Persistence: SQLAlchemy 2 tables, the async engine, and Alembic migrations run at start-up."""

from api.db.engine import Database
from api.db.tables import (
    Base,
    DeploymentEventRow,
    DeploymentRow,
    JobRow,
    ModelRow,
    OptimizedModelRow,
    UserRow,
)

__all__ = [
    "Base",
    "Database",
    "DeploymentEventRow",
    "DeploymentRow",
    "JobRow",
    "ModelRow",
    "OptimizedModelRow",
    "UserRow",
]
