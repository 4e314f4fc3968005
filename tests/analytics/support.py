"""Builders of deployments and synthetic usage of known shape for the analytics tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aideploy.schema import Deployment
from api.analytics.records import LATENCY_BOUNDS_MS, DeploymentFacts, UsageSample

EPOCH = datetime(2026, 3, 2, tzinfo=UTC)
"""A Monday, 00:00 UTC: day ``k`` of a synthetic history is ``EPOCH + k days``."""


def bucket_counts(requests: int, latency_ms: float) -> tuple[int, ...]:
    """All ``requests`` in the histogram bucket ``latency_ms`` falls in."""
    counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    index = next(
        (i for i, bound in enumerate(LATENCY_BOUNDS_MS) if latency_ms <= bound),
        len(LATENCY_BOUNDS_MS),
    )
    counts[index] = requests
    return tuple(counts)


def make_facts(
    deployment_id: str = "dep-1",
    *,
    name: str | None = None,
    deployment_type: str = "kubernetes",
    cloud: str = "aws",
    region: str | None = "us-east-1",
    cpu: str = "1",
    memory: str = "2Gi",
    model_size_bytes: int = 2**30,
    created_at: datetime = EPOCH,
    **spec: Any,
) -> DeploymentFacts:
    target: dict[str, Any] = {"cloud": cloud}
    if region is not None and cloud != "local":
        target["region"] = region
    deployment = Deployment.model_validate(
        {
            "id": deployment_id,
            "name": name or deployment_id,
            "model_id": "model-1",
            "deployment_type": deployment_type,
            "status": "active",
            "created_at": created_at,
            "updated_at": created_at,
            "resource_requirements": {"cpu": cpu, "memory": memory},
            "target": target,
            **spec,
        }
    )
    return DeploymentFacts(deployment, model_size_bytes)


def make_sample(
    start: datetime,
    *,
    deployment_id: str = "dep-1",
    seconds: int = 3600,
    requests: int = 0,
    errors: int = 0,
    latency_ms: float = 50.0,
    instances: float = 1.0,
    cpu_utilization: float = 0.0,
    cores: float = 1.0,
    memory_bytes: int = 0,
    bytes_out: int = 0,
) -> UsageSample:
    """A sample of ``requests`` all taking ``latency_ms``, ``instances`` up all along."""
    instance_seconds = instances * seconds
    return UsageSample(
        deployment_id=deployment_id,
        start=start,
        seconds=seconds,
        requests=requests,
        errors=errors,
        latency_ms_sum=requests * latency_ms,
        latency_buckets=bucket_counts(requests, latency_ms),
        instance_seconds=instance_seconds,
        cpu_seconds=instance_seconds * cores * cpu_utilization,
        memory_byte_seconds=instance_seconds * memory_bytes,
        memory_peak_bytes=memory_bytes,
        bytes_out=bytes_out,
    )


def hours(count: int, start: datetime = EPOCH) -> list[datetime]:
    return [start + timedelta(hours=k) for k in range(count)]
