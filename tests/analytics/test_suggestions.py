"""Suggestions from utilization and traffic, with recommended quantities in Kubernetes notation."""

from __future__ import annotations

from datetime import timedelta

from aideploy.schema import Suggestion
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
    assert "96% of the hours had no requests" in found["enable_hibernation"].message
    assert found["enable_hibernation"].impact == "high"
    assert found["migrate_to_serverless"].recommended_value == "serverless"


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
