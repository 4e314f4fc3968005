"""Suggestions from utilization and traffic, with recommended quantities in Kubernetes notation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aideploy.schema import Cloud, DeploymentSuggestions, Suggestion
from api.analytics.cost import PricingOptions
from api.analytics.records import Window
from api.analytics.suggestions import suggest
from tests.analytics.support import EPOCH, hours, make_facts, make_sample

GIB = 2**30
TWO_DAYS = Window(EPOCH, EPOCH + timedelta(days=2))


def _by_type(suggestions: list[Suggestion]) -> dict[str, Suggestion]:
    return {item.type: item for item in suggestions}


def test_over_provisioned_cpu_and_memory_get_right_sized(pricing: PricingOptions) -> None:
    facts = make_facts(cpu="4", memory="8Gi", model_size_bytes=0)
    samples = [
        make_sample(
            hour, requests=20_000, latency_ms=80.0, cores=4, cpu_utilization=0.2, memory_bytes=GIB
        )
        for hour in hours(48)
    ]
    result = suggest({facts.id: facts}, samples, TWO_DAYS, pricing)
    found = _by_type(result.suggestions_by_deployment["dep-1"].suggestions)
    cpu = found["cpu_over_provisioned"]
    # 20 % of 4 cores = 0.8 cores in use; at 70 % target that is 1.143 -> 1.2 cores.
    assert (cpu.current_value, cpu.recommended_value) == ("4", "1200m")
    assert (
        cpu.message == "CPU is over-provisioned. Average utilization: 20.00% (busiest hours: 20%)"
    )
    assert cpu.estimated_savings is not None
    assert cpu.estimated_savings > 0
    memory = found["memory_over_provisioned"]
    # 1 GiB peak with 25 % headroom = 1280Mi (a multiple of 64Mi).
    assert (memory.current_value, memory.recommended_value) == ("8Gi", "1280Mi")
    assert "enable_spot_instances" in found
    assert "enable_hibernation" not in found  # traffic every hour
    assert "migrate_to_serverless" not in found  # busy 56 % of the time


def test_under_provisioned_resources_are_raised(pricing: PricingOptions) -> None:
    facts = make_facts(cpu="1", memory="1Gi", model_size_bytes=0)
    samples = [
        make_sample(hour, requests=1_000, cpu_utilization=0.95, memory_bytes=int(0.95 * GIB))
        for hour in hours(48)
    ]
    result = suggest({facts.id: facts}, samples, TWO_DAYS, pricing)
    found = _by_type(result.suggestions_by_deployment["dep-1"].suggestions)
    assert found["cpu_under_provisioned"].recommended_value == "1400m"
    assert found["memory_under_provisioned"].recommended_value == "1216Mi"
    assert found["memory_under_provisioned"].impact == "high"


def test_idle_kubernetes_deployment_should_hibernate_or_go_serverless(
    pricing: PricingOptions,
) -> None:
    facts = make_facts(
        cost_optimization_policy={"use_spot_instances": True}, model_size_bytes=0
    )  # spot already on: not suggested again
    samples = [
        make_sample(
            hour, requests=50 if hour.hour == 12 else 0, latency_ms=100.0, cpu_utilization=0.5
        )
        for hour in hours(48)
    ]
    result = suggest({facts.id: facts}, samples, TWO_DAYS, pricing)
    found = _by_type(result.suggestions_by_deployment["dep-1"].suggestions)
    assert set(found) == {"enable_hibernation", "migrate_to_serverless"}
    hibernation = found["enable_hibernation"]
    assert "96% of the hours had no requests" in hibernation.message
    # Idle 0-11h, 13-35h and 37-47h; each stretch sleeps after the 30-minute idle timeout:
    # 11.5 + 22.5 + 10.5 = 44.5 hours of the one autoscaled instance, on spot (half a c6i.large).
    _, spot = next(
        (node.on_demand_hourly.value, node.spot_hourly.value)
        for node in pricing.catalog.region(Cloud.AWS, "us-east-1").nodes
        if node.instance_type == "c6i.large"
    )
    assert hibernation.estimated_savings == pytest.approx(44.5 * spot / 2, abs=1e-4)
    assert f"would have saved {44.5 * spot / 2:.2f} USD" in hibernation.message
    # The EKS control plane (0.10/h) outweighs the node: the saving is under half the cost.
    assert hibernation.impact == "medium"
    assert found["migrate_to_serverless"].recommended_value == "serverless"


def test_hibernation_only_where_it_stops_something(pricing: PricingOptions) -> None:
    """A serverless deployment with min_instances 0 already scales to zero: nothing to suggest.
    With one warm instance, hibernation saves that instance's idle time at the idle rate."""
    samples = [
        make_sample(hour, requests=50 if hour.hour == 12 else 0, cpu_utilization=0.6)
        for hour in hours(48)
    ]
    scales_to_zero = make_facts(
        deployment_type="serverless", model_size_bytes=0, scaling_policy={"min_instances": 0}
    )
    result = suggest({scales_to_zero.id: scales_to_zero}, samples, TWO_DAYS, pricing)
    assert result.suggestions_by_deployment == {}

    warm = make_facts(
        deployment_type="serverless", model_size_bytes=0, scaling_policy={"min_instances": 1}
    )
    result = suggest({warm.id: warm}, samples, TWO_DAYS, pricing)
    [hibernation] = result.suggestions_by_deployment["dep-1"].suggestions
    assert hibernation.type == "enable_hibernation"
    lam = pricing.catalog.region(Cloud.AWS, "us-east-1").serverless
    assert lam.idle_gib_second is not None
    assert hibernation.estimated_savings == pytest.approx(
        44.5 * 3600 * 2 * lam.idle_gib_second.value, abs=1e-4
    )
    assert hibernation.impact == "high"  # the warm instance is nearly all of the cost

    hibernated = make_facts(model_size_bytes=0, status="hibernated")
    result = suggest({hibernated.id: hibernated}, samples, TWO_DAYS, pricing)
    assert "enable_hibernation" not in _by_type(
        result.suggestions_by_deployment.get(
            "dep-1", DeploymentSuggestions(deployment_name="dep-1", suggestions=[])
        ).suggestions
    )


def test_slow_unoptimized_models_are_told_to_optimize(pricing: PricingOptions) -> None:
    facts = make_facts(
        deployment_type="serverless",
        cost_optimization_policy={"hibernation_enabled": True},
        model_size_bytes=0,
    )
    samples = [
        make_sample(hour, requests=100, latency_ms=1_800.0, cpu_utilization=0.6)
        for hour in hours(48)
    ]
    result = suggest({facts.id: facts}, samples, TWO_DAYS, pricing)
    [latency] = result.suggestions_by_deployment["dep-1"].suggestions
    assert latency.type == "high_latency"
    assert "POST /models/{id}/optimize" in latency.message


def test_deployments_without_findings_are_left_out(pricing: PricingOptions) -> None:
    facts = make_facts(
        deployment_type="serverless",
        cost_optimization_policy={"hibernation_enabled": True},
        model_size_bytes=0,
    )
    samples = [
        make_sample(hour, requests=1_000, cpu_utilization=0.6, memory_bytes=int(1.2 * GIB))
        for hour in hours(48)
    ]
    assert suggest({facts.id: facts}, samples, TWO_DAYS, pricing).suggestions_by_deployment == {}
