"""The usage report a serving process pushes to ``POST /deployments/{id}/usage``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.analytics.records import LATENCY_BOUNDS_MS

__all__ = ["MAX_MINUTES_PER_REPORT", "UsageMinute", "UsageReceipt", "UsageReport"]

MAX_MINUTES_PER_REPORT = 1440
Count = Annotated[int, Field(ge=0)]
Amount = Annotated[float, Field(ge=0)]


class UsageMinute(BaseModel):
    """One instance's complete tally of one UTC minute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: datetime
    """The minute's first second (seconds and below must be zero; timezone required)."""
    requests: Count = 0
    errors: Count = 0
    latency_ms_sum: Amount = 0.0
    latency_buckets: list[Count] = Field(default_factory=list)
    """Requests per latency bucket (upper bounds in ms: 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250,
    500, 1000, 2500, 5000, 10000) and one more for slower ones; empty without requests."""
    instance_seconds: Annotated[float, Field(ge=0, le=60)] = 0.0
    cpu_seconds: Amount = 0.0
    memory_byte_seconds: Amount = 0.0
    memory_peak_bytes: Count = 0
    bytes_out: Count = 0

    @field_validator("start")
    @classmethod
    def _whole_minute(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. 2026-01-01T12:00:00Z)")
        if value.second or value.microsecond:
            raise ValueError("must be the start of a minute (seconds = 0)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.errors > self.requests:
            raise ValueError(f"errors ({self.errors}) exceed requests ({self.requests})")
        if self.latency_buckets:
            if len(self.latency_buckets) != len(LATENCY_BOUNDS_MS) + 1:
                raise ValueError(
                    f"latency_buckets: expected {len(LATENCY_BOUNDS_MS) + 1} counts, got "
                    f"{len(self.latency_buckets)}"
                )
            if sum(self.latency_buckets) != self.requests:
                raise ValueError("latency_buckets must add up to requests")
        elif self.requests:
            raise ValueError("latency_buckets: required when there were requests")
        return self


class UsageReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
    """Which instance of the deployment reports (each instance's minutes are kept apart)."""
    minutes: Annotated[list[UsageMinute], Field(max_length=MAX_MINUTES_PER_REPORT)]


class UsageReceipt(BaseModel):
    accepted: int
    """Minutes stored (a minute sent again replaces the earlier copy)."""
    skipped: int
    """Minutes too old to change (already rolled up) or in the future."""
    accepted_from: datetime
    """Minutes starting before this are past the minute retention and were skipped: the
    reporter logs them as lost."""
