"""Cost arithmetic on the price catalog, shared by placement (estimates) and analytics (actuals).

The unit functions (:func:`node_for`, :func:`serverless_compute_cost`,
:func:`managed_endpoint_cost`, ...) price *measured* usage: instance-hours, request counts,
bytes. :func:`estimate_monthly_cost` composes them from a :class:`UsageProfile` and a deployment's
policies to price a month *before* anything ran. Every estimate lists its assumptions, because a
number without them cannot be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aideploy.errors import InputError
from aideploy.schema import (
    Cloud,
    CostOptimizationPolicy,
    DeploymentType,
    ResourceRequirements,
    ScalingPolicy,
)
from aideploy_iac.policies import replica_split, requests_per_instance
from aideploy_iac.pricing.catalog import ManagedInstance, NodeType, PriceCatalog, RegionPrices

__all__ = [
    "HOURS_PER_MONTH",
    "CostEstimate",
    "UsageProfile",
    "egress_cost",
    "estimate_monthly_cost",
    "managed_endpoint_cost",
    "managed_instance_for",
    "node_for",
    "node_share",
    "serverless_compute_cost",
    "storage_cost",
]

HOURS_PER_MONTH = 730.0
SECONDS_PER_HOUR = 3600.0
GIB = 2**30


@dataclass(frozen=True)
class UsageProfile:
    """The traffic a month is priced for; the defaults describe a small production model."""

    requests_per_month: float = 1_000_000
    avg_request_seconds: float = 0.2
    """Mean time one request occupies an instance slot."""
    egress_gib_per_month: float = 10.0
    model_size_gib: float = 1.0
    active_hours_per_month: float = HOURS_PER_MONTH
    """Hours in which requests arrive; below 730 a scale-to-zero deployment sleeps the rest."""

    def __post_init__(self) -> None:
        for name in (
            "requests_per_month",
            "avg_request_seconds",
            "egress_gib_per_month",
            "model_size_gib",
        ):
            if getattr(self, name) < 0:
                raise InputError(f"usage.{name}: must be >= 0")
        if not 0 <= self.active_hours_per_month <= HOURS_PER_MONTH:
            raise InputError(f"usage.active_hours_per_month: must be 0-{HOURS_PER_MONTH:g}")


@dataclass(frozen=True)
class CostEstimate:
    """A month's cost in the catalog's currency, split the way the analytics API reports it."""

    cloud: Cloud
    region: str
    product: str
    compute: float
    storage: float
    network: float
    catalog_version: str
    instance_type: str | None = None
    assumptions: tuple[str, ...] = field(default=())

    @property
    def total(self) -> float:
        return round(self.compute + self.storage + self.network, 2)

    @property
    def place(self) -> str:
        return f"{self.cloud.value}/{self.region}"


def _cores(resources: ResourceRequirements) -> float:
    return float(resources.cpu_cores)


def _gib(resources: ResourceRequirements) -> float:
    return resources.memory_bytes / GIB


def node_share(node: NodeType | ManagedInstance, resources: ResourceRequirements) -> float:
    """The fraction of a node one instance occupies: its largest share of cpu, memory or GPU."""
    shares = [_cores(resources) / node.vcpu, _gib(resources) / node.memory_gib]
    if resources.gpu:
        shares.append(resources.gpu / node.gpu)
    return max(shares)


def _fits(node: NodeType | ManagedInstance, resources: ResourceRequirements) -> bool:
    return (
        node.vcpu >= _cores(resources)
        and node.memory_gib >= _gib(resources)
        and node.gpu >= (resources.gpu or 0)
        and (node.gpu == 0) == (not resources.gpu)
    )


def node_for(
    prices: RegionPrices, resources: ResourceRequirements, *, spot: bool
) -> tuple[NodeType, float]:
    """The node type where one instance costs least, and that instance's hourly share of it.

    Instances are assumed bin-packed: an instance pays the share of the node it occupies.
    """
    candidates = [node for node in prices.nodes if _fits(node, resources)]
    if not candidates:
        raise InputError(
            f"resource_requirements: no catalogued node type fits cpu {resources.cpu}, memory "
            f"{resources.memory}, gpu {resources.gpu or 0}"
        )

    def hourly(node: NodeType) -> float:
        price = node.spot_hourly if spot else node.on_demand_hourly
        return node_share(node, resources) * price.value

    best = min(candidates, key=hourly)
    return best, hourly(best)


def managed_instance_for(prices: RegionPrices, resources: ResourceRequirements) -> ManagedInstance:
    """The cheapest managed-endpoint instance one deployment instance fits on (no sharing)."""
    candidates = [item for item in prices.managed_endpoint.instances if _fits(item, resources)]
    if not candidates:
        raise InputError(
            f"resource_requirements: no {prices.managed_endpoint.product} instance fits cpu "
            f"{resources.cpu}, memory {resources.memory}, gpu {resources.gpu or 0}"
        )
    return min(candidates, key=lambda item: item.hourly.value)


def managed_endpoint_cost(
    prices: RegionPrices, resources: ResourceRequirements, instance_hours: float
) -> float:
    """What ``instance_hours`` of the managed ML endpoint cost: whole instances, always billed."""
    return instance_hours * managed_instance_for(prices, resources).hourly.value


def serverless_compute_cost(
    prices: RegionPrices,
    resources: ResourceRequirements,
    *,
    requests: float,
    busy_instance_seconds: float,
    idle_instance_seconds: float,
) -> float:
    """Compute and request charges of the serverless product for measured usage.

    ``busy_instance_seconds`` is instance time spent handling requests; ``idle_instance_seconds``
    is time instances were kept warm without requests (min instances, provisioned concurrency).
    Where CPU is not billed separately (Lambda) only memory-seconds count.
    """
    serverless = prices.serverless
    cores, gib = _cores(resources), _gib(resources)
    busy_rate = gib * serverless.gib_second.value + (
        cores * serverless.vcpu_second.value if serverless.vcpu_second else 0.0
    )
    idle_rate = (gib * serverless.idle_gib_second.value if serverless.idle_gib_second else 0.0) + (
        cores * serverless.idle_vcpu_second.value if serverless.idle_vcpu_second else 0.0
    )
    request_fee = requests / 1_000_000 * serverless.million_requests.value
    return busy_instance_seconds * busy_rate + idle_instance_seconds * idle_rate + request_fee


def storage_cost(prices: RegionPrices, gib_months: float) -> float:
    return gib_months * prices.object_storage_gib_month.value


def egress_cost(prices: RegionPrices, gib: float) -> float:
    return gib * prices.egress_gib.value


def _kubernetes_compute(
    prices: RegionPrices,
    resources: ResourceRequirements,
    scaling: ScalingPolicy,
    cost: CostOptimizationPolicy,
    usage: UsageProfile,
    assumptions: list[str],
) -> tuple[float, str]:
    per_instance = requests_per_instance(resources.cpu_cores)
    active_seconds = usage.active_hours_per_month * SECONDS_PER_HOUR
    demand = (
        usage.requests_per_month
        * usage.avg_request_seconds
        / active_seconds
        / per_instance
        / (scaling.target_cpu_utilization / 100)
        if active_seconds
        else 0.0
    )
    # The replicas the deployment actually keeps: the on-demand floor plus, without
    # hibernation, the autoscaler's minimum (at least one, an HPA cannot go to zero).
    split = replica_split(scaling, cost)
    floor = split.total_min
    on_demand_floor = split.on_demand
    active_instances = min(float(scaling.max_instances), max(float(floor), demand))
    idle_hours = HOURS_PER_MONTH - usage.active_hours_per_month
    instance_hours = active_instances * usage.active_hours_per_month + floor * idle_hours
    on_demand_hours = min(instance_hours, on_demand_floor * HOURS_PER_MONTH)
    node, on_demand_rate = node_for(prices, resources, spot=False)
    compute = on_demand_hours * on_demand_rate
    if cost.use_spot_instances:
        spot_node, spot_rate = node_for(prices, resources, spot=True)
        compute += (instance_hours - on_demand_hours) * spot_rate
        assumptions.append(f"spot instances on {spot_node.instance_type} at the typical spot price")
    else:
        compute += (instance_hours - on_demand_hours) * on_demand_rate
    assumptions.append(
        f"{instance_hours:.0f} instance-hours bin-packed on {node.instance_type} nodes; "
        "cluster control plane not included (shared by all deployments)"
    )
    return compute, node.instance_type


def _serverless_compute(
    cloud: Cloud,
    prices: RegionPrices,
    resources: ResourceRequirements,
    scaling: ScalingPolicy,
    cost: CostOptimizationPolicy,
    usage: UsageProfile,
    assumptions: list[str],
) -> float:
    # Lambda runs one request per instance; the container products run one per core.
    per_instance = 1 if cloud is Cloud.AWS else requests_per_instance(resources.cpu_cores)
    busy = usage.requests_per_month * usage.avg_request_seconds / per_instance
    warm = 0 if cost.hibernation_enabled else scaling.min_instances
    idle = max(0.0, warm * HOURS_PER_MONTH * SECONDS_PER_HOUR - busy)
    assumptions.append(
        f"{busy:.0f} busy instance-seconds ({per_instance} request(s) per instance), "
        f"{idle:.0f} idle warm instance-seconds; free tiers not deducted"
    )
    return serverless_compute_cost(
        prices,
        resources,
        requests=usage.requests_per_month,
        busy_instance_seconds=busy,
        idle_instance_seconds=idle,
    )


def estimate_monthly_cost(
    catalog: PriceCatalog,
    *,
    cloud: Cloud,
    region: str,
    deployment_type: DeploymentType,
    resources: ResourceRequirements,
    scaling: ScalingPolicy,
    cost: CostOptimizationPolicy,
    usage: UsageProfile | None = None,
) -> CostEstimate:
    """A month of the deployment on ``cloud``/``region`` for the given usage (default profile)."""
    usage = usage or UsageProfile()
    prices = catalog.region(cloud, region)
    assumptions: list[str] = [
        f"{usage.requests_per_month:.0f} requests of {usage.avg_request_seconds:g} s in "
        f"{usage.active_hours_per_month:g} active hours"
    ]
    instance_type: str | None = None
    if deployment_type is DeploymentType.KUBERNETES:
        compute, instance_type = _kubernetes_compute(
            prices, resources, scaling, cost, usage, assumptions
        )
        product = "Kubernetes"
    else:
        compute = _serverless_compute(cloud, prices, resources, scaling, cost, usage, assumptions)
        product = prices.serverless.product
    return CostEstimate(
        cloud=cloud,
        region=region,
        product=product,
        compute=round(compute, 2),
        storage=round(storage_cost(prices, usage.model_size_gib), 2),
        network=round(egress_cost(prices, usage.egress_gib_per_month), 2),
        catalog_version=catalog.version,
        instance_type=instance_type,
        assumptions=tuple(assumptions),
    )
