"""The inputs of the analytics engine: usage samples and the facts about each deployment.

A :class:`UsageSample` is what one deployment did during one interval (a minute as reported, or
an hour after the roll-up). Every field is a sum (or a maximum) so samples of any length merge
without loss: averages are always derived, never stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aideploy.schema import Cloud, Deployment, DeploymentType
from serving.metrics import LATENCY_BUCKETS

__all__ = [
    "LATENCY_BOUNDS_MS",
    "DeploymentFacts",
    "UsageSample",
    "Window",
    "by_deployment",
    "floor_hour",
    "latency_percentile",
    "merge",
    "to_hourly",
]

LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(bound * 1000 for bound in LATENCY_BUCKETS)
"""Upper bounds of the latency histogram buckets in milliseconds; one overflow bucket follows."""

HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class UsageSample:
    """What one deployment did in ``[start, start + seconds)``, summed over its instances."""

    deployment_id: str
    start: datetime
    seconds: int
    requests: int = 0
    errors: int = 0
    latency_ms_sum: float = 0.0
    """Sum of request latencies: divided by ``requests`` it is the mean latency."""
    latency_buckets: tuple[int, ...] = ()
    """Request counts per bucket of :data:`LATENCY_BOUNDS_MS` plus one overflow bucket."""
    instance_seconds: float = 0.0
    """Seconds instances were up (two instances for a minute make 120)."""
    cpu_seconds: float = 0.0
    """CPU time the instances used; against ``instance_seconds * cpu`` it is utilization."""
    memory_byte_seconds: float = 0.0
    """Resident memory integrated over time; over ``instance_seconds`` it is the mean."""
    memory_peak_bytes: int = 0
    """The largest resident memory one instance had."""
    bytes_out: int = 0

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    @property
    def avg_latency_ms(self) -> float:
        return self.latency_ms_sum / self.requests if self.requests else 0.0

    @property
    def error_rate(self) -> float:
        """Percent of requests that failed."""
        return 100.0 * self.errors / self.requests if self.requests else 0.0


def merge(
    deployment_id: str, start: datetime, seconds: int, parts: Sequence[UsageSample]
) -> UsageSample:
    """One sample covering ``parts`` (sums add up, the memory peak is the largest)."""
    width = max((len(part.latency_buckets) for part in parts), default=0)
    buckets = [0] * width
    for part in parts:
        for index, count in enumerate(part.latency_buckets):
            buckets[index] += count
    return UsageSample(
        deployment_id=deployment_id,
        start=start,
        seconds=seconds,
        requests=sum(part.requests for part in parts),
        errors=sum(part.errors for part in parts),
        latency_ms_sum=sum(part.latency_ms_sum for part in parts),
        latency_buckets=tuple(buckets),
        instance_seconds=sum(part.instance_seconds for part in parts),
        cpu_seconds=sum(part.cpu_seconds for part in parts),
        memory_byte_seconds=sum(part.memory_byte_seconds for part in parts),
        memory_peak_bytes=max((part.memory_peak_bytes for part in parts), default=0),
        bytes_out=sum(part.bytes_out for part in parts),
    )


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def to_hourly(samples: Iterable[UsageSample]) -> list[UsageSample]:
    """Samples of one or many deployments merged per (deployment, UTC hour), in time order."""
    groups: dict[tuple[str, datetime], list[UsageSample]] = {}
    for sample in samples:
        groups.setdefault((sample.deployment_id, floor_hour(sample.start)), []).append(sample)
    return [
        parts[0]
        if len(parts) == 1 and parts[0].start == hour and parts[0].seconds == 3600
        else merge(deployment_id, hour, 3600, parts)
        for (deployment_id, hour), parts in sorted(groups.items(), key=lambda item: item[0][1])
    ]


def by_deployment(samples: Iterable[UsageSample]) -> dict[str, list[UsageSample]]:
    grouped: dict[str, list[UsageSample]] = {}
    for sample in samples:
        grouped.setdefault(sample.deployment_id, []).append(sample)
    for parts in grouped.values():
        parts.sort(key=lambda sample: sample.start)
    return grouped


def latency_percentile(buckets: Sequence[int], quantile: float) -> float | None:
    """The ``quantile`` (0-1) latency in ms, interpolated linearly inside its bucket.

    Requests in the overflow bucket are reported at the last finite bound (a lower bound of the
    truth), as Prometheus' ``histogram_quantile`` does.
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = quantile * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index >= len(LATENCY_BOUNDS_MS):
                return LATENCY_BOUNDS_MS[-1]
            lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
            upper = LATENCY_BOUNDS_MS[index]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return LATENCY_BOUNDS_MS[-1]


@dataclass(frozen=True)
class Window:
    """The half-open time range ``[start, end)`` an analysis covers."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("end must be after start")

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def overlap_seconds(self, start: datetime, end: datetime | None = None) -> float:
        """Seconds of ``[start, end)`` inside the window (``end`` defaults to the window's)."""
        begin = max(self.start, start)
        finish = min(self.end, end or self.end)
        return max(0.0, (finish - begin).total_seconds())


@dataclass(frozen=True)
class DeploymentFacts:
    """What the engine needs to know about a deployment besides its usage."""

    deployment: Deployment
    model_size_bytes: int = 0
    """Bytes of the served artifact: object storage is billed for them."""
    ended_at: datetime | None = None
    """When a deleted deployment stopped existing (``None`` while it exists)."""

    @property
    def id(self) -> str:
        return self.deployment.id

    def lifetime_seconds(self, window: Window) -> float:
        """Seconds of ``window`` the deployment existed."""
        return window.overlap_seconds(self.deployment.created_at, self.ended_at)

    @property
    def name(self) -> str:
        return self.deployment.name

    @property
    def type(self) -> DeploymentType:
        return self.deployment.deployment_type

    @property
    def cloud(self) -> Cloud:
        target = self.deployment.target
        return Cloud.LOCAL if target is None else target.cloud
