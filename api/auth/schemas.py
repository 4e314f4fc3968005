"""Request and response bodies of the user endpoints (an extension of the seed contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class UserCreate(BaseModel):
    """*Extension*: the body of ``POST /auth/users`` (administrators only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: Annotated[str, Field(min_length=1, max_length=128)]
    password: Annotated[str, Field(min_length=8, max_length=1024)]
    is_admin: bool = False


class User(BaseModel):
    id: str
    username: str
    is_admin: bool
    created_at: datetime
