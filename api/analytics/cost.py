"""Cost of recorded usage at catalog prices, and what the same usage would cost elsewhere.

Pure functions: usage samples and deployment facts in, numbers out. Unit prices and their
arithmetic come from :mod:`aideploy_iac.pricing`, the catalog multi-cloud placement also uses.

How measured usage is priced:

- **Kubernetes**: instance-seconds at the hourly share of the cheapest node type the instance
  fits on (bin-packed), on-demand or spot as the deployment's policy says
  (``on_demand_base_instances`` stay on-demand).
- **Serverless**: the product's busy compute (request time, divided by the requests one
  instance serves at once), idle warm instances only when ``min_instances`` keeps them and
  hibernation is off, and the per-request fee.
- **Storage**: the model artifact in object storage for the time the deployment existed.
- **Network**: bytes sent to clients at the region's internet egress price.
- **Local** deployments run on this host and have no bill; they are priced as the same usage
  in the reference cloud's default region, so a local trial shows what production will cost.

The comparison prices the same usage on each cloud's managed ML endpoint (SageMaker real-time,
Vertex AI prediction, Azure ML online endpoints): whole instances billed while the endpoint
exists, at least one (none of the three scales a real-time endpoint to zero), or as many as the
deployment actually ran when that was more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta

from aideploy.errors import InputError
from aideploy.schema import (
    Cloud,
    CostAnalysis,
    CostBreakdown,
    CostComparison,
    DeploymentType,
    Recommendation,
    ResourceRequirements,
)
from aideploy_iac.policies import requests_per_instance
from aideploy_iac.pricing import (
    PriceCatalog,
    RegionPrices,
    egress_cost,
    managed_endpoint_cost,
    node_for,
    serverless_compute_cost,
    storage_cost,
)
from api.analytics.records import DeploymentFacts, UsageSample, Window, merge

__all__ = [
    "COMPARED_CLOUDS",
    "DeploymentCost",
    "PricingOptions",
    "analyze_cost",
    "busy_fraction",
    "deployment_cost",
    "serverless_alternative",
    "spot_saving",
]

GIB = 2**30
SECONDS_PER_HOUR = 3600.0
SECONDS_PER_MONTH = 730.0 * SECONDS_PER_HOUR
COMPARED_CLOUDS = (Cloud.AWS, Cloud.AZURE, Cloud.GCP)


@dataclass(frozen=True)
class PricingOptions:
    """Which prices apply: the catalog, each cloud's default region, and the reference cloud
    that prices local deployments."""

    catalog: PriceCatalog
    regions: Mapping[Cloud, str]
    local_priced_as: Cloud = Cloud.AWS
    high_cost_factor: float = 1.5
    """A deployment costing this many times the mean is called high-cost."""
    low_traffic_busy_fraction: float = 0.1
    """A Kubernetes deployment busy less than this share of its instance time is low-traffic."""

    def place(self, facts: DeploymentFacts) -> tuple[Cloud, str]:
        """The (cloud, region) whose prices apply to the deployment."""
        target = facts.deployment.target
        if target is None or target.cloud is Cloud.LOCAL:
            return self.local_priced_as, self._region(self.local_priced_as)
        return target.cloud, target.region or self._region(target.cloud)

    def prices(self, facts: DeploymentFacts) -> RegionPrices:
        cloud, region = self.place(facts)
        return self.catalog.region(cloud, region)

    def comparison_prices(self, facts: DeploymentFacts, cloud: Cloud) -> RegionPrices:
        """The deployment's own region when it runs on ``cloud``, else that cloud's default."""
        own_cloud, own_region = self.place(facts)
        return self.catalog.region(cloud, own_region if own_cloud is cloud else self._region(cloud))

    def _region(self, cloud: Cloud) -> str:
        region = self.regions.get(cloud)
        if region is None:
            raise InputError(f"default_regions: no default region configured for {cloud.value}")
        return region


@dataclass(frozen=True)
class DeploymentCost:
    """One deployment's cost in a window, and the managed-endpoint cost of the same usage."""

    deployment_id: str
    compute: float
    storage: float
    network: float
    managed: dict[Cloud, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return self.compute + self.storage + self.network


def _busy_seconds(usage: UsageSample, concurrency: int) -> float:
    """Instance time spent handling requests: request time over the requests served at once,
    never more than the instance time measured."""
    busy = usage.latency_ms_sum / 1000.0 / concurrency
    return min(busy, usage.instance_seconds) if usage.instance_seconds else busy


def _serverless_concurrency(cloud: Cloud, resources: ResourceRequirements) -> int:
    """Lambda serves one request per instance; Cloud Run and Container Apps one per core."""
    return 1 if cloud is Cloud.AWS else requests_per_instance(resources.cpu_cores)


def _kubernetes_compute(
    facts: DeploymentFacts, prices: RegionPrices, usage: UsageSample, lifetime_seconds: float
) -> float:
    deployment = facts.deployment
    resources, policy = deployment.resource_requirements, deployment.cost_optimization_policy
    instance_hours = usage.instance_seconds / SECONDS_PER_HOUR
    _, on_demand_rate = node_for(prices, resources, spot=False)
    if not policy.use_spot_instances:
        return instance_hours * on_demand_rate
    on_demand_hours = min(
        instance_hours, policy.on_demand_base_instances * lifetime_seconds / SECONDS_PER_HOUR
    )
    _, spot_rate = node_for(prices, resources, spot=True)
    return on_demand_hours * on_demand_rate + (instance_hours - on_demand_hours) * spot_rate


def _serverless_compute(
    facts: DeploymentFacts,
    cloud: Cloud,
    prices: RegionPrices,
    usage: UsageSample,
    lifetime_seconds: float,
) -> float:
    deployment = facts.deployment
    resources = deployment.resource_requirements
    busy = _busy_seconds(usage, _serverless_concurrency(cloud, resources))
    policy = deployment.cost_optimization_policy
    warm_instances = 0 if policy.hibernation_enabled else deployment.scaling_policy.min_instances
    idle = max(0.0, min(usage.instance_seconds - busy, warm_instances * lifetime_seconds))
    return serverless_compute_cost(
        prices,
        resources,
        requests=usage.requests,
        busy_instance_seconds=busy,
        idle_instance_seconds=idle,
    )


def _storage_and_network(
    facts: DeploymentFacts, prices: RegionPrices, usage: UsageSample, lifetime_seconds: float
) -> tuple[float, float]:
    gib_months = facts.model_size_bytes / GIB * lifetime_seconds / SECONDS_PER_MONTH
    return storage_cost(prices, gib_months), egress_cost(prices, usage.bytes_out / GIB)


def deployment_cost(
    facts: DeploymentFacts,
    samples: Sequence[UsageSample],
    window: Window,
    options: PricingOptions,
) -> DeploymentCost:
    """Price one deployment's samples (already limited to the window) at catalog prices."""
    usage = merge(facts.id, window.start, int(window.seconds), samples)
    lifetime = facts.lifetime_seconds(window)
    cloud, _ = options.place(facts)
    prices = options.prices(facts)
    if facts.type is DeploymentType.KUBERNETES:
        compute = _kubernetes_compute(facts, prices, usage, lifetime)
    else:
        compute = _serverless_compute(facts, cloud, prices, usage, lifetime)
    storage, network = _storage_and_network(facts, prices, usage, lifetime)
    managed: dict[Cloud, float] = {}
    notes: list[str] = []
    resources = facts.deployment.resource_requirements
    always_on = max(1, facts.deployment.scaling_policy.min_instances) * lifetime
    for other in COMPARED_CLOUDS:
        other_prices = options.comparison_prices(facts, other)
        hours = max(usage.instance_seconds, always_on) / SECONDS_PER_HOUR
        try:
            managed_compute = managed_endpoint_cost(other_prices, resources, hours)
        except InputError as exc:
            notes.append(f"{facts.name} on {other.value}: {exc}; compared at our own cost")
            managed[other] = compute + storage + network
            continue
        managed[other] = managed_compute + sum(
            _storage_and_network(facts, other_prices, usage, lifetime)
        )
    return DeploymentCost(facts.id, compute, storage, network, managed, tuple(notes))


def serverless_alternative(
    facts: DeploymentFacts, samples: Sequence[UsageSample], window: Window, options: PricingOptions
) -> float:
    """The compute cost of the same usage on the cloud's serverless product, scaled to zero."""
    usage = merge(facts.id, window.start, int(window.seconds), samples)
    cloud, _ = options.place(facts)
    resources = facts.deployment.resource_requirements
    busy = _busy_seconds(usage, _serverless_concurrency(cloud, resources))
    return serverless_compute_cost(
        options.prices(facts),
        resources,
        requests=usage.requests,
        busy_instance_seconds=busy,
        idle_instance_seconds=0.0,
    )


def spot_saving(facts: DeploymentFacts, compute: float, options: PricingOptions) -> float:
    """What moving a Kubernetes deployment's on-demand compute to spot would save."""
    if facts.type is not DeploymentType.KUBERNETES:
        return 0.0
    if facts.deployment.cost_optimization_policy.use_spot_instances:
        return 0.0
    prices = options.prices(facts)
    resources = facts.deployment.resource_requirements
    _, on_demand_rate = node_for(prices, resources, spot=False)
    _, spot_rate = node_for(prices, resources, spot=True)
    return compute * (1 - spot_rate / on_demand_rate) if on_demand_rate else 0.0


def busy_fraction(facts: DeploymentFacts, samples: Sequence[UsageSample]) -> float | None:
    """Share of instance time spent handling requests, ``None`` without instance time."""
    usage = merge(facts.id, facts.deployment.created_at, 0, samples)
    if not usage.instance_seconds:
        return None
    concurrency = requests_per_instance(facts.deployment.resource_requirements.cpu_cores)
    return _busy_seconds(usage, concurrency) / usage.instance_seconds


def _place(facts: DeploymentFacts, options: PricingOptions) -> tuple[str, str]:
    cloud, region = options.place(facts)
    return cloud.value, region


def _money(value: float) -> float:
    return round(value, 4)


def _names(facts: Sequence[DeploymentFacts]) -> str:
    return ", ".join(item.name for item in facts)


def _recommendations(
    facts: Mapping[str, DeploymentFacts],
    samples: Mapping[str, Sequence[UsageSample]],
    costs: Mapping[str, DeploymentCost],
    window: Window,
    options: PricingOptions,
) -> list[Recommendation]:
    total = sum(cost.total for cost in costs.values())
    recommendations: list[Recommendation] = []
    priced = [cost for cost in costs.values() if cost.total > 0]
    if len(priced) >= 2:
        mean = total / len(priced)
        high = sorted(
            (cost for cost in priced if cost.total >= options.high_cost_factor * mean),
            key=lambda cost: -cost.total,
        )
        if high:
            share = sum(cost.total for cost in high) / total
            recommendations.append(
                Recommendation(
                    type="high_cost_deployments",
                    message=(
                        "Consider optimizing high-cost deployments: "
                        f"{_names([facts[cost.deployment_id] for cost in high])} "
                        f"({share:.0%} of the cost)"
                    ),
                    impact="high" if share >= 0.5 else "medium",
                )
            )
    migrations: list[tuple[DeploymentFacts, float]] = []
    for deployment_id, item in facts.items():
        own = samples.get(deployment_id, ())
        if item.type is not DeploymentType.KUBERNETES or not own:
            continue
        fraction = busy_fraction(item, own)
        if fraction is None or fraction >= options.low_traffic_busy_fraction:
            continue
        saving = costs[deployment_id].compute - serverless_alternative(item, own, window, options)
        if saving > 0:
            migrations.append((item, saving))
    if migrations:
        saving = sum(amount for _, amount in migrations)
        recommendations.append(
            Recommendation(
                type="serverless_migration",
                message=(
                    "Consider migrating low-traffic deployments to serverless for cost savings: "
                    f"{_names([item for item, _ in migrations])} (would save {saving:.2f} "
                    f"{options.catalog.currency} in this period)"
                ),
                impact="high" if total and saving / total >= 0.3 else "medium",
            )
        )
    spot = [
        (facts[deployment_id], spot_saving(facts[deployment_id], cost.compute, options))
        for deployment_id, cost in costs.items()
    ]
    spot = [(item, saving) for item, saving in spot if saving > 0]
    if spot:
        saving = sum(amount for _, amount in spot)
        recommendations.append(
            Recommendation(
                type="spot_instances",
                message=(
                    "Use spot/preemptible instances for non-critical workloads to reduce costs: "
                    f"{_names([item for item, _ in spot])} (would save {saving:.2f} "
                    f"{options.catalog.currency} in this period at typical spot prices)"
                ),
                impact="high" if total and saving / total >= 0.3 else "medium",
            )
        )
    return recommendations


def analyze_cost(
    facts: Mapping[str, DeploymentFacts],
    samples: Sequence[UsageSample],
    window: Window,
    options: PricingOptions,
) -> CostAnalysis:
    """``GET /analytics/cost``: one owner's deployments and their samples in ``window``."""
    grouped: dict[str, list[UsageSample]] = {deployment_id: [] for deployment_id in facts}
    for sample in samples:
        if sample.deployment_id in grouped and window.start <= sample.start < window.end:
            grouped[sample.deployment_id].append(sample)
    costs = {
        deployment_id: deployment_cost(item, grouped[deployment_id], window, options)
        for deployment_id, item in facts.items()
    }
    by_type: dict[str, float] = {}
    for deployment_id, cost in costs.items():
        kind = facts[deployment_id].type.value
        by_type[kind] = by_type.get(kind, 0.0) + cost.total
    ours = sum(cost.total for cost in costs.values())
    managed = {
        cloud: sum(cost.managed[cloud] for cost in costs.values()) for cloud in COMPARED_CLOUDS
    }
    return CostAnalysis(
        timestamp=window.end,
        total_cost=_money(ours),
        cost_breakdown=CostBreakdown(
            compute=_money(sum(cost.compute for cost in costs.values())),
            storage=_money(sum(cost.storage for cost in costs.values())),
            network=_money(sum(cost.network for cost in costs.values())),
        ),
        cost_by_type={kind: _money(value) for kind, value in by_type.items()},
        cost_by_deployment={key: _money(cost.total) for key, cost in costs.items()},
        comparison=CostComparison(
            our_platform=_money(ours),
            aws=_money(managed[Cloud.AWS]),
            azure=_money(managed[Cloud.AZURE]),
            gcp=_money(managed[Cloud.GCP]),
            savings_percentage={
                cloud.value: round(100 * (managed[cloud] - ours) / managed[cloud], 2)
                if managed[cloud]
                else 0.0
                for cloud in COMPARED_CLOUDS
            },
        ),
        recommendations=_recommendations(facts, grouped, costs, window, options),
        currency=options.catalog.currency,
        catalog_version=options.catalog.version,
        start_time=window.start,
        end_time=window.end,
        priced_as={key: "/".join(_place(item, options)) for key, item in facts.items()},
        notes=[note for cost in costs.values() for note in cost.notes],
        cost_by_day=_cost_by_day(facts, grouped, window, options),
    )


def _cost_by_day(
    facts: Mapping[str, DeploymentFacts],
    grouped: Mapping[str, Sequence[UsageSample]],
    window: Window,
    options: PricingOptions,
) -> dict[date, float]:
    """Each UTC day's cost: the same pricing applied to the part of the window in that day."""
    per_day: dict[tuple[str, date], list[UsageSample]] = {}
    for key, samples in grouped.items():
        for sample in samples:
            per_day.setdefault((key, sample.start.astimezone(UTC).date()), []).append(sample)
    days: dict[date, float] = {}
    day = window.start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < window.end:
        part = Window(max(day, window.start), min(day + timedelta(days=1), window.end))
        days[day.date()] = _money(
            sum(
                deployment_cost(item, per_day.get((key, day.date()), []), part, options).total
                for key, item in facts.items()
            )
        )
        day += timedelta(days=1)
    return days
