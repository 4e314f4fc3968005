"""Per-deployment suggestions from what the deployment actually used, each priced where it can be.

- **Right-sizing**: CPU from CPU time against ``instance-seconds x cpu`` (the busiest hours'
  95th percentile sized to 70 % utilization); memory from the largest resident set (with 25 %
  headroom, rounded up to 64Mi). Over- and under-provisioning are both reported.
- **Spot**: a Kubernetes deployment on on-demand capacity, with the saving at typical spot prices.
- **Hibernation**: only where it changes the bill (the target keeps standing instances that
  hibernation would scale to zero: Kubernetes, or serverless with ``min_instances``) and at
  least half of the hours had no request; the saving is those instances' cost over the idle
  stretches, less the idle timeout that precedes each sleep.
- **Serverless**: a Kubernetes deployment busy less than 10 % of its instance time, when the
  cloud's serverless product would have cost less for the same requests.
- **Latency**: mean or p95 latency above the threshold: optimize the model, or give it more CPU.

``estimated_savings`` is in the catalog's currency over the analysed window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from aideploy.quantity import format_cpu, format_memory
from aideploy.schema import (
    DeploymentSuggestions,
    DeploymentType,
    ModelType,
    OptimizationSuggestions,
    ResourceRequirements,
    Suggestion,
)
from api.analytics.cost import (
    PricingOptions,
    busy_fraction,
    control_plane_shares,
    deployment_cost,
    serverless_alternative,
    spot_saving,
    standing_cost,
    standing_instances,
)
from api.analytics.performance import PerformanceThresholds, stats_of
from api.analytics.records import (
    HOUR,
    DeploymentFacts,
    UsageSample,
    Window,
    floor_hour,
    to_hourly,
)

__all__ = ["SizingPolicy", "suggest"]

_MEMORY_STEP = 64 * 2**20
_CPU_STEP = Decimal("0.1")


@dataclass(frozen=True)
class SizingPolicy:
    target_cpu_utilization: float = 70.0
    """Percent of the requested CPU the busiest hours should use after right-sizing."""
    cpu_over_percent: float = 30.0
    cpu_under_percent: float = 85.0
    memory_over_percent: float = 50.0
    memory_under_percent: float = 90.0
    memory_headroom: float = 1.25
    idle_hours_share: float = 0.5
    min_hours: int = 24
    """Hours of recorded usage needed before utilization or idleness is judged."""


def _percentile(values: Sequence[float], quantile: float) -> float:
    ordered = sorted(values)
    position = quantile * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _saving(
    facts: DeploymentFacts,
    samples: Sequence[UsageSample],
    window: Window,
    options: PricingOptions,
    resources: ResourceRequirements,
) -> float:
    """Compute cost now minus compute cost of the same usage with ``resources``."""
    resized = DeploymentFacts(
        facts.deployment.model_copy(update={"resource_requirements": resources}),
        facts.model_size_bytes,
    )
    now = deployment_cost(facts, samples, window, options).compute
    try:
        return now - deployment_cost(resized, samples, window, options).compute
    except ValueError:  # no catalogued node or instance fits the new size
        return 0.0


def _cpu(
    facts: DeploymentFacts,
    hourly: Sequence[UsageSample],
    window: Window,
    options: PricingOptions,
    policy: SizingPolicy,
) -> list[Suggestion]:
    resources = facts.deployment.resource_requirements
    cores = float(resources.cpu_cores)
    running = [sample for sample in hourly if sample.instance_seconds > 0]
    total_instance = sum(sample.instance_seconds for sample in running)
    if len(running) < policy.min_hours or not total_instance:
        return []
    average = 100.0 * sum(sample.cpu_seconds for sample in running) / (total_instance * cores)
    busiest = _percentile(
        [100.0 * sample.cpu_seconds / (sample.instance_seconds * cores) for sample in running], 0.95
    )
    needed = Decimal(str(cores * busiest / policy.target_cpu_utilization))
    recommended = max(
        _CPU_STEP, (needed / _CPU_STEP).to_integral_value(rounding="ROUND_CEILING") * _CPU_STEP
    )
    current = resources.cpu_cores
    if average < policy.cpu_over_percent and recommended < current:
        kind, verb = "cpu_over_provisioned", "over"
    elif average > policy.cpu_under_percent and recommended > current:
        kind, verb = "cpu_under_provisioned", "under"
    else:
        return []
    new = resources.model_copy(update={"cpu": format_cpu(recommended)})
    saving = _saving(facts, hourly, window, options, new)
    return [
        Suggestion(
            type=kind,
            message=f"CPU is {verb}-provisioned. Average utilization: {average:.2f}% "
            f"(busiest hours: {busiest:.0f}%)",
            current_value=resources.cpu,
            recommended_value=new.cpu,
            impact="high" if verb == "under" or recommended <= current / 2 else "medium",
            estimated_savings=round(saving, 4) if saving > 0 else None,
        )
    ]


def _memory(
    facts: DeploymentFacts,
    hourly: Sequence[UsageSample],
    window: Window,
    options: PricingOptions,
    policy: SizingPolicy,
) -> list[Suggestion]:
    resources = facts.deployment.resource_requirements
    running = [sample for sample in hourly if sample.instance_seconds > 0]
    peak = max((sample.memory_peak_bytes for sample in running), default=0)
    if len(running) < policy.min_hours or not peak:
        return []
    requested = resources.memory_bytes
    used = 100.0 * peak / requested
    recommended = max(
        2 * _MEMORY_STEP, math.ceil(peak * policy.memory_headroom / _MEMORY_STEP) * _MEMORY_STEP
    )
    if used < policy.memory_over_percent and recommended < requested:
        kind, verb = "memory_over_provisioned", "over"
    elif used > policy.memory_under_percent and recommended > requested:
        kind, verb = "memory_under_provisioned", "under"
    else:
        return []
    average = sum(sample.memory_byte_seconds for sample in running) / sum(
        sample.instance_seconds for sample in running
    )
    new = resources.model_copy(update={"memory": format_memory(recommended)})
    saving = _saving(facts, hourly, window, options, new)
    return [
        Suggestion(
            type=kind,
            message=f"Memory is {verb}-provisioned. Average utilization: "
            f"{100.0 * average / requested:.2f}% (peak: {used:.0f}%)",
            current_value=resources.memory,
            recommended_value=new.memory,
            impact="high" if verb == "under" else "medium",
            estimated_savings=round(saving, 4) if saving > 0 else None,
        )
    ]


def _idle_seconds(
    facts: DeploymentFacts, hourly: Sequence[UsageSample], window: Window, timeout: float
) -> tuple[float, float]:
    """Seconds of the deployment's life in the window without requests, and how many of them
    come after ``timeout`` idle seconds (when hibernation would have it asleep). An hour with a
    request counts as busy to its end, so sleep is never overestimated."""
    busy = {floor_hour(sample.start) for sample in hourly if sample.requests > 0}
    start = max(window.start, facts.deployment.created_at)
    end = min(window.end, facts.ended_at or window.end)
    idle = asleep = run = 0.0
    slot = floor_hour(start)
    while slot < end:
        if slot in busy:
            asleep += max(0.0, run - timeout)
            run = 0.0
        else:
            seconds = (min(slot + HOUR, end) - max(slot, start)).total_seconds()
            idle += seconds
            run += seconds
        slot += HOUR
    return idle, asleep + max(0.0, run - timeout)


def _hibernation(
    facts: DeploymentFacts,
    hourly: Sequence[UsageSample],
    window: Window,
    options: PricingOptions,
    sizing: SizingPolicy,
    total_cost: float,
) -> list[Suggestion]:
    policy = facts.deployment.cost_optimization_policy
    lifetime = facts.lifetime_seconds(window)
    if policy.hibernation_enabled or lifetime < sizing.min_hours * 3600:
        return []
    hibernating = DeploymentFacts(
        facts.deployment.model_copy(
            update={
                "cost_optimization_policy": policy.model_copy(update={"hibernation_enabled": True})
            }
        ),
        facts.model_size_bytes,
        facts.ended_at,
    )
    removed = standing_instances(facts) - standing_instances(hibernating)
    if removed <= 0:  # nothing stands idle that hibernation would stop (e.g. scale-to-zero)
        return []
    idle, asleep = _idle_seconds(facts, hourly, window, policy.hibernation_idle_timeout)
    idle_share = idle / lifetime
    saving = standing_cost(facts, removed * asleep, options)
    if idle_share < sizing.idle_hours_share or saving <= 0:
        return []
    return [
        Suggestion(
            type="enable_hibernation",
            message="Enable hibernation for inactive deployments to reduce costs "
            f"({idle_share:.0%} of the hours had no requests; scaling {removed} standing "
            f"instance(s) to zero after {policy.hibernation_idle_timeout // 60} idle minutes "
            f"would have saved {saving:.2f} {options.catalog.currency}, at the price of a cold "
            "start on the first request after each sleep)",
            current_value="false",
            recommended_value="true",
            impact="high" if saving >= 0.5 * total_cost else "medium",
            estimated_savings=round(saving, 4),
        )
    ]


def _for_deployment(
    facts: DeploymentFacts,
    samples: Sequence[UsageSample],
    window: Window,
    options: PricingOptions,
    sizing: SizingPolicy,
    limits: PerformanceThresholds,
    control_plane_seconds: float | None,
) -> list[Suggestion]:
    if not samples:
        return []
    hourly = to_hourly(samples)
    currency = options.catalog.currency
    suggestions = _cpu(facts, hourly, window, options, sizing) + _memory(
        facts, hourly, window, options, sizing
    )
    cost = deployment_cost(facts, samples, window, options, control_plane_seconds)
    spot = spot_saving(facts, cost.compute, options)
    if spot > 0:
        suggestions.append(
            Suggestion(
                type="enable_spot_instances",
                message="Enable spot/preemptible instances to reduce costs "
                f"(would have saved {spot:.2f} {currency} at typical spot prices)",
                current_value="false",
                recommended_value="true",
                impact="high" if spot >= 0.5 * cost.total else "medium",
                estimated_savings=round(spot, 4),
            )
        )
    suggestions += _hibernation(facts, hourly, window, options, sizing, cost.total)
    if facts.type is DeploymentType.KUBERNETES:
        fraction = busy_fraction(facts, samples)
        if fraction is not None and fraction < options.low_traffic_busy_fraction:
            saving = cost.compute - serverless_alternative(facts, samples, window, options)
            if saving > 0:
                suggestions.append(
                    Suggestion(
                        type="migrate_to_serverless",
                        message="Consider migrating to serverless deployment for low-traffic "
                        f"workload (busy {fraction:.1%} of the time; would have saved "
                        f"{saving:.2f} {currency})",
                        current_value=DeploymentType.KUBERNETES.value,
                        recommended_value=DeploymentType.SERVERLESS.value,
                        impact="high" if saving >= 0.5 * cost.total else "medium",
                        estimated_savings=round(saving, 4),
                    )
                )
    stats = stats_of(samples)
    p95 = stats.p95_latency or 0.0
    if stats.requests and max(stats.avg_latency, p95) > limits.latency_ms:
        advice = (
            "optimize the model (POST /models/{id}/optimize) or increase resources"
            if facts.deployment.model_type is ModelType.ORIGINAL
            else "increase resources, or try a stronger optimization"
        )
        suggestions.append(
            Suggestion(
                type="high_latency",
                message=f"High latency detected (mean {stats.avg_latency:.0f}ms, p95 {p95:.0f}ms; "
                f"threshold {limits.latency_ms:g}ms). Consider: {advice}",
                impact="high",
            )
        )
    return suggestions


def suggest(
    facts: Mapping[str, DeploymentFacts],
    samples: Sequence[UsageSample],
    window: Window,
    options: PricingOptions,
    sizing: SizingPolicy | None = None,
    limits: PerformanceThresholds | None = None,
) -> OptimizationSuggestions:
    """``GET /analytics/suggestions``: deployments with at least one suggestion."""
    sizing = sizing or SizingPolicy()
    limits = limits or PerformanceThresholds()
    grouped: dict[str, list[UsageSample]] = {key: [] for key in facts}
    for sample in samples:
        if sample.deployment_id in grouped and window.start <= sample.start < window.end:
            grouped[sample.deployment_id].append(sample)
    shares = control_plane_shares(facts, window, options)
    result: dict[str, DeploymentSuggestions] = {}
    for key, item in facts.items():
        if item.ended_at is not None:
            continue  # deleted: nothing left to change
        found = _for_deployment(
            item, grouped[key], window, options, sizing, limits, shares.get(key)
        )
        if found:
            result[key] = DeploymentSuggestions(deployment_name=item.name, suggestions=found)
    return OptimizationSuggestions(
        timestamp=window.end,
        suggestions_by_deployment=result,
        start_time=window.start,
        end_time=window.end,
    )
