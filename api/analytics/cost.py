"""Cost of recorded usage at catalog prices, and what the same usage would cost elsewhere.

Pure functions: usage samples and deployment facts in, numbers out. Unit prices and their
arithmetic come from :mod:`aideploy_iac.pricing`, the catalog multi-cloud placement also uses.

How measured usage is priced:

- **Standing instances** (:func:`standing_instances`): what the deployment's target keeps
  running whatever the traffic (the plan's effective ``min_instances``) is billed for its whole
  lifetime in the window, reported or not: a deployment whose runtime never reports (a cloud
  deployment without ``api_public_url``) still costs what it keeps up, never $0.
- **Kubernetes**: instance-seconds (measured, and at least the standing instances) at the hourly
  share of the cheapest node type the instance fits on (bin-packed), on-demand or spot as the
  deployment's policy says (``on_demand_base_instances`` stay on-demand); plus the cluster's
  control plane, split evenly among the owner's deployments on the same cluster.
- **Serverless**: the product's busy compute (request time, divided by the requests one
  instance serves at once), standing (warm) instances for the rest of their lifetime at the
  idle rate, and the per-request fee.
- **Storage**: the model artifact in object storage for the time the deployment existed.
- **Network**: bytes sent to clients at the region's internet egress price.
- **Local** deployments run on this host and have no bill; they are priced as the same usage
  in the reference cloud's default region, so a local trial shows what production will cost.

The comparison prices the same usage on each cloud's managed ML endpoint (SageMaker real-time,
Vertex AI prediction, Azure ML online endpoints): whole instances billed while the endpoint
exists, at least one (none of the three scales a real-time endpoint to zero), or as many as the
deployment actually ran when that was more. Deployments that reported no usage in the window are
left out of both sides (their traffic is unknown), and ``notes`` say so, as they state every
assumption that favours our side (node bin-packing, the control plane split, estimated spot
prices).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta

from aideploy.errors import InputError
from aideploy.schema import (
    Cloud,
    CostAnalysis,
    CostBreakdown,
    CostComparison,
    DeploymentStatus,
    DeploymentType,
    Recommendation,
    ResourceRequirements,
)
from aideploy_iac.policies import replica_split, requests_per_instance
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
    "control_plane_shares",
    "deployment_cost",
    "serverless_alternative",
    "spot_saving",
    "standing_cost",
    "standing_instances",
]

GIB = 2**30
SECONDS_PER_HOUR = 3600.0
SECONDS_PER_MONTH = 730.0 * SECONDS_PER_HOUR
COMPARED_CLOUDS = (Cloud.AWS, Cloud.AZURE, Cloud.GCP)
REPORTED_SHARE = 0.9
"""Below this share of the standing instance time reported, a note says the rest was charged
without reports."""
_NOT_RUNNING = frozenset(
    {DeploymentStatus.CREATING, DeploymentStatus.FAILED, DeploymentStatus.HIBERNATED}
)


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

    def control_plane_hourly(self, facts: DeploymentFacts) -> float:
        """The hourly fee of one Kubernetes cluster's control plane where the deployment runs."""
        cloud, _ = self.place(facts)
        self.prices(facts)  # an uncatalogued cloud or region is an InputError naming it
        return self.catalog.clouds[cloud].kubernetes_control_plane_hourly.value

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
    """Instance compute (nodes, or the serverless product's charges)."""
    storage: float
    network: float
    control_plane: float = 0.0
    """This deployment's share of its Kubernetes cluster's control plane."""
    managed: dict[Cloud, float] = field(default_factory=dict)
    """The same usage on each cloud's managed ML endpoint; empty when nothing was reported."""
    notes: tuple[str, ...] = ()
    reported: bool = True
    """Whether the deployment reported any usage in the window (else its traffic is unknown)."""

    @property
    def total(self) -> float:
        return self.compute + self.control_plane + self.storage + self.network


def standing_instances(facts: DeploymentFacts) -> int:
    """Instances the deployment's target keeps up whatever the traffic, as the target plans
    them: on Kubernetes the replica split's minimum (the on-demand base, and the autoscaler's
    floor of one unless hibernation lets KEDA scale to zero); on the serverless products
    ``min_instances`` unless hibernation is on. None while it is hibernated, being created or
    failed (judged by its current status)."""
    deployment = facts.deployment
    if deployment.status in _NOT_RUNNING:
        return 0
    scaling, cost = deployment.scaling_policy, deployment.cost_optimization_policy
    if facts.type is DeploymentType.KUBERNETES:
        return replica_split(scaling, cost).total_min
    return 0 if cost.hibernation_enabled else scaling.min_instances


def _busy_seconds(usage: UsageSample, concurrency: int) -> float:
    """Instance time spent handling requests: request time over the requests served at once,
    never more than the instance time measured."""
    busy = usage.latency_ms_sum / 1000.0 / concurrency
    return min(busy, usage.instance_seconds) if usage.instance_seconds else busy


def _serverless_concurrency(cloud: Cloud, resources: ResourceRequirements) -> int:
    """Lambda serves one request per instance; Cloud Run and Container Apps one per core."""
    return 1 if cloud is Cloud.AWS else requests_per_instance(resources.cpu_cores)


def _kubernetes_compute(
    facts: DeploymentFacts, prices: RegionPrices, instance_seconds: float, lifetime_seconds: float
) -> float:
    deployment = facts.deployment
    resources, policy = deployment.resource_requirements, deployment.cost_optimization_policy
    instance_hours = instance_seconds / SECONDS_PER_HOUR
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
    standing_seconds: float,
) -> float:
    """Busy time at the busy rate; the standing (warm) instances' remaining time at the idle
    rate, as the placement estimate prices it."""
    resources = facts.deployment.resource_requirements
    busy = _busy_seconds(usage, _serverless_concurrency(cloud, resources))
    return serverless_compute_cost(
        prices,
        resources,
        requests=usage.requests,
        busy_instance_seconds=busy,
        idle_instance_seconds=max(0.0, standing_seconds - busy),
    )


def standing_cost(
    facts: DeploymentFacts, instance_seconds: float, options: PricingOptions
) -> float:
    """What ``instance_seconds`` of idle standing instances cost: autoscaled Kubernetes capacity
    (spot when the policy uses it), or warm serverless instances at the idle rate."""
    prices = options.prices(facts)
    resources = facts.deployment.resource_requirements
    if facts.type is DeploymentType.KUBERNETES:
        spot = facts.deployment.cost_optimization_policy.use_spot_instances
        _, rate = node_for(prices, resources, spot=spot)
        return instance_seconds / SECONDS_PER_HOUR * rate
    return serverless_compute_cost(
        prices,
        resources,
        requests=0,
        busy_instance_seconds=0.0,
        idle_instance_seconds=instance_seconds,
    )


def _storage_and_network(
    facts: DeploymentFacts, prices: RegionPrices, usage: UsageSample, lifetime_seconds: float
) -> tuple[float, float]:
    gib_months = facts.model_size_bytes / GIB * lifetime_seconds / SECONDS_PER_MONTH
    return storage_cost(prices, gib_months), egress_cost(prices, usage.bytes_out / GIB)


def _usage_notes(
    facts: DeploymentFacts, usage: UsageSample, standing: int, lifetime: float, reported: bool
) -> list[str]:
    """Say what was charged without reports, so $0 never stands for "unknown"."""
    if not reported:
        if standing:
            return [
                f"{facts.name}: no usage reported in this window, so its requests, egress and "
                f"any scale-out are unknown; charged only its {standing} standing instance(s) "
                f"for {lifetime / SECONDS_PER_HOUR:.1f} h and its model storage, and left out "
                "of the comparison"
            ]
        return [
            f"{facts.name}: no usage reported in this window and it keeps no instance running, "
            "so its compute cost is unknown: either it served nothing or its runtime does not "
            "report (cloud deployments report only when api_public_url is set); charged its "
            "model storage only and left out of the comparison"
        ]
    standing_seconds = standing * lifetime
    if standing_seconds and usage.instance_seconds < REPORTED_SHARE * standing_seconds:
        share = usage.instance_seconds / standing_seconds
        return [
            f"{facts.name}: usage was reported for only {share:.0%} of the time its {standing} "
            "standing instance(s) ran; the unreported time is charged at the standing instances"
        ]
    return []


def deployment_cost(
    facts: DeploymentFacts,
    samples: Sequence[UsageSample],
    window: Window,
    options: PricingOptions,
    control_plane_seconds: float | None = None,
) -> DeploymentCost:
    """Price one deployment's samples (already limited to the window) at catalog prices; it
    bears ``control_plane_seconds`` of its Kubernetes cluster's control plane (by default its
    whole lifetime: alone on its cluster), see :func:`control_plane_shares`."""
    usage = merge(facts.id, window.start, int(window.seconds), samples)
    lifetime = facts.lifetime_seconds(window)
    cloud, _ = options.place(facts)
    prices = options.prices(facts)
    standing = standing_instances(facts)
    standing_seconds = standing * lifetime
    control_plane = 0.0
    if facts.type is DeploymentType.KUBERNETES:
        instance_seconds = max(usage.instance_seconds, standing_seconds)
        compute = _kubernetes_compute(facts, prices, instance_seconds, lifetime)
        plane = lifetime if control_plane_seconds is None else control_plane_seconds
        control_plane = options.control_plane_hourly(facts) * plane / SECONDS_PER_HOUR
    else:
        compute = _serverless_compute(facts, cloud, prices, usage, standing_seconds)
    storage, network = _storage_and_network(facts, prices, usage, lifetime)
    reported = bool(samples)
    notes = _usage_notes(facts, usage, standing, lifetime, reported) if lifetime else []
    managed: dict[Cloud, float] = {}
    resources = facts.deployment.resource_requirements
    always_on = max(1, facts.deployment.scaling_policy.min_instances) * lifetime
    for other in COMPARED_CLOUDS if reported else ():
        other_prices = options.comparison_prices(facts, other)
        hours = max(usage.instance_seconds, always_on) / SECONDS_PER_HOUR
        try:
            managed_compute = managed_endpoint_cost(other_prices, resources, hours)
        except InputError as exc:
            notes.append(f"{facts.name} on {other.value}: {exc}; compared at our own cost")
            managed[other] = compute + control_plane + storage + network
            continue
        managed[other] = managed_compute + sum(
            _storage_and_network(facts, other_prices, usage, lifetime)
        )
    return DeploymentCost(
        facts.id, compute, storage, network, control_plane, managed, tuple(notes), reported
    )


def _cluster(facts: DeploymentFacts, options: PricingOptions) -> str:
    """The Kubernetes cluster a deployment runs on, as people name it."""
    cloud, region = options.place(facts)
    target = facts.deployment.target
    if target is not None and target.cluster:
        return f"cluster {target.cluster} ({cloud.value}/{region})"
    if facts.cloud is Cloud.LOCAL:
        return f"the {cloud.value}/{region} cluster local deployments are priced on"
    return f"the default {cloud.value}/{region} cluster"


def _clusters(
    facts: Mapping[str, DeploymentFacts], window: Window, options: PricingOptions
) -> dict[str, list[DeploymentFacts]]:
    """The Kubernetes deployments that existed in the window, by cluster."""
    clusters: dict[str, list[DeploymentFacts]] = {}
    for item in facts.values():
        if item.type is DeploymentType.KUBERNETES and item.lifetime_seconds(window) > 0:
            clusters.setdefault(_cluster(item, options), []).append(item)
    return clusters


def control_plane_shares(
    facts: Mapping[str, DeploymentFacts], window: Window, options: PricingOptions
) -> dict[str, float]:
    """For each Kubernetes deployment that existed in the window, the seconds of its cluster's
    control plane it bears: at every moment the cluster's fee is split evenly among ``facts``
    (its owner's deployments) running on it then, so the shares add up to the time the cluster
    served any of them."""
    shares: dict[str, float] = {}
    for members in _clusters(facts, window, options).values():
        spans = [
            (
                max(window.start, item.deployment.created_at),
                min(window.end, item.ended_at or window.end),
                item.id,
            )
            for item in members
        ]
        cuts = sorted({moment for begin, end, _ in spans for moment in (begin, end)})
        for begin, end in itertools.pairwise(cuts):
            alive = [key for first, last, key in spans if first <= begin and end <= last]
            for key in alive:
                shares[key] = shares.get(key, 0.0) + (end - begin).total_seconds() / len(alive)
    return shares


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


def _assumptions(
    facts: Mapping[str, DeploymentFacts], window: Window, options: PricingOptions
) -> list[str]:
    """The assumptions behind the numbers that a managed endpoint's price does not need."""
    catalog = options.catalog
    notes = [f"prices: catalog {catalog.version}: {catalog.note}"]
    clusters = _clusters(facts, window, options)
    if not clusters:
        return notes
    notes.append(
        "Kubernetes instances are priced as their share of the cheapest node type they fit on, "
        "as if nodes were perfectly packed: partly empty nodes and the cluster's own system pods "
        "(kube-system, KEDA) are not charged, so a real bill is higher"
    )
    for name, members in sorted(clusters.items()):
        hourly = options.control_plane_hourly(members[0])
        notes.append(
            f"the control plane of {name} costs {hourly:g} {catalog.currency}/h, split evenly "
            f"among your {len(members)} Kubernetes deployment(s) on it while they run, as if "
            "the cluster ran nothing else (shared with other workloads, it costs you less)"
        )
    spot: set[str] = set()
    for members in clusters.values():
        for item in members:
            prices = options.prices(item)
            resources = item.deployment.resource_requirements
            node, _ = node_for(prices, resources, spot=True)
            cloud, region = options.place(item)
            ratio = node.spot_hourly.value / node.on_demand_hourly.value
            spot.add(
                f"spot prices are catalog estimates, not observed market prices: {node.instance_type} "
                f"in {cloud.value}/{region} at {ratio:.0%} of its on-demand price"
            )
    return notes + sorted(spot)


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
    shares = control_plane_shares(facts, window, options)
    costs = {
        deployment_id: deployment_cost(
            item, grouped[deployment_id], window, options, shares.get(deployment_id)
        )
        for deployment_id, item in facts.items()
    }
    by_type = {kind.value: 0.0 for kind in DeploymentType}
    for deployment_id, cost in costs.items():
        by_type[facts[deployment_id].type.value] += cost.total
    total = sum(cost.total for cost in costs.values())
    compared = [cost for cost in costs.values() if cost.reported]
    ours = sum(cost.total for cost in compared)
    managed = {cloud: sum(cost.managed[cloud] for cost in compared) for cloud in COMPARED_CLOUDS}
    return CostAnalysis(
        timestamp=window.end,
        total_cost=_money(total),
        cost_breakdown=CostBreakdown(
            compute=_money(sum(cost.compute + cost.control_plane for cost in costs.values())),
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
        notes=[note for cost in costs.values() for note in cost.notes]
        + _assumptions(facts, window, options),
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
        shares = control_plane_shares(facts, part, options)
        days[day.date()] = _money(
            sum(
                deployment_cost(
                    item, per_day.get((key, day.date()), []), part, options, shares.get(key)
                ).total
                for key, item in facts.items()
            )
        )
        day += timedelta(days=1)
    return days
