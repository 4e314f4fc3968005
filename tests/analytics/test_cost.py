"""Costs of synthetic usage of known shape, checked against sums worked out by hand from the
catalog's unit prices (looked up by name, so a price refresh does not break the arithmetic)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aideploy.schema import Cloud
from aideploy_iac.pricing import PriceCatalog
from api.analytics.cost import PricingOptions, analyze_cost
from api.analytics.records import Window
from tests.analytics.support import EPOCH, hours, make_facts, make_sample

GIB = 2**30
TEN_DAYS = Window(EPOCH, EPOCH + timedelta(days=10))


def _node(
    catalog: PriceCatalog, cloud: Cloud, region: str, instance_type: str
) -> tuple[float, float]:
    node = next(n for n in catalog.region(cloud, region).nodes if n.instance_type == instance_type)
    return node.on_demand_hourly.value, node.spot_hourly.value


def _managed(catalog: PriceCatalog, cloud: Cloud, region: str, instance_type: str) -> float:
    prices = catalog.region(cloud, region).managed_endpoint.instances
    return next(i for i in prices if i.instance_type == instance_type).hourly.value


def test_kubernetes_cost_is_instance_hours_at_the_node_share(
    catalog: PriceCatalog, pricing: PricingOptions
) -> None:
    """1 cpu / 2Gi on AWS: half a c6i.large (2 vCPU, 4 GiB) is the cheapest fit."""
    facts = make_facts(cpu="1", memory="2Gi", model_size_bytes=GIB)
    samples = [
        make_sample(hour, requests=100, bytes_out=GIB // 24) for hour in hours(240)
    ]  # 10 days, one instance all along, 10 GiB out in total
    result = analyze_cost({facts.id: facts}, samples, TEN_DAYS, pricing)

    on_demand, _ = _node(catalog, Cloud.AWS, "us-east-1", "c6i.large")
    region = catalog.region(Cloud.AWS, "us-east-1")
    compute = 240 * on_demand / 2
    storage = 1 * (240 / 730) * region.object_storage_gib_month.value
    network = 240 * (GIB // 24) / GIB * region.egress_gib.value
    assert result.cost_breakdown.compute == pytest.approx(compute, abs=1e-4)
    assert result.cost_breakdown.storage == pytest.approx(storage, abs=1e-4)
    assert result.cost_breakdown.network == pytest.approx(network, abs=1e-4)
    assert result.total_cost == pytest.approx(compute + storage + network, abs=1e-4)
    assert result.cost_by_type == {"kubernetes": result.total_cost}
    assert result.cost_by_deployment == {"dep-1": result.total_cost}
    assert result.priced_as == {"dep-1": "aws/us-east-1"}
    assert len(result.cost_by_day) == 10
    assert sum(result.cost_by_day.values()) == pytest.approx(result.total_cost, abs=1e-3)

    # SageMaker: one ml.m5.large all along, plus the same storage and egress on AWS.
    sagemaker = 240 * _managed(catalog, Cloud.AWS, "us-east-1", "ml.m5.large") + storage + network
    assert result.comparison.aws == pytest.approx(sagemaker, abs=1e-4)
    expected_saving = 100 * (sagemaker - result.total_cost) / sagemaker
    assert result.comparison.savings_percentage["aws"] == pytest.approx(expected_saving, abs=0.01)
    gcp = catalog.region(Cloud.GCP, "us-central1")
    vertex = (
        240 * _managed(catalog, Cloud.GCP, "us-central1", "n1-standard-2")
        + (240 / 730) * gcp.object_storage_gib_month.value
        + 10 * gcp.egress_gib.value
    )
    assert result.comparison.gcp == pytest.approx(vertex, abs=1e-3)


def test_spot_with_an_on_demand_base(catalog: PriceCatalog, pricing: PricingOptions) -> None:
    """Two instances all along, one kept on-demand: one at the on-demand, one at the spot share."""
    facts = make_facts(
        cost_optimization_policy={"use_spot_instances": True, "on_demand_base_instances": 1},
        model_size_bytes=0,
    )
    samples = [make_sample(hour, instances=2) for hour in hours(240)]
    result = analyze_cost({facts.id: facts}, samples, TEN_DAYS, pricing)
    on_demand, spot = _node(catalog, Cloud.AWS, "us-east-1", "c6i.large")
    assert result.cost_breakdown.compute == pytest.approx(240 * (on_demand + spot) / 2, abs=1e-4)
    assert not any(item.type == "spot_instances" for item in result.recommendations)


def test_serverless_cost_is_busy_time_and_request_fees(
    catalog: PriceCatalog, pricing: PricingOptions
) -> None:
    """Cloud Run, 1 vCPU / 2 GiB, scale to zero: 100,000 requests of 200 ms."""
    facts = make_facts(
        "svc", deployment_type="serverless", cloud="gcp", region="us-central1", model_size_bytes=0,
        scaling_policy={"min_instances": 0, "max_instances": 5},
    )  # fmt: skip
    samples = [
        make_sample(hour, deployment_id="svc", requests=1000, latency_ms=200.0, instances=0.5)
        for hour in hours(100)
    ]
    result = analyze_cost({facts.id: facts}, samples, TEN_DAYS, pricing)
    run = catalog.region(Cloud.GCP, "us-central1").serverless
    assert run.vcpu_second is not None
    busy_seconds = 100_000 * 0.2
    expected = (
        busy_seconds * (1 * run.vcpu_second.value + 2 * run.gib_second.value)
        + 0.1 * run.million_requests.value
    )
    assert result.cost_breakdown.compute == pytest.approx(expected, abs=1e-4)
    assert result.cost_by_type == {"serverless": pytest.approx(expected, abs=1e-4)}


def test_local_deployments_are_priced_in_the_reference_cloud(
    catalog: PriceCatalog, pricing: PricingOptions
) -> None:
    facts = make_facts(cloud="local", region=None, model_size_bytes=0)
    samples = [make_sample(hour) for hour in hours(24)]
    result = analyze_cost({facts.id: facts}, samples, TEN_DAYS, pricing)
    on_demand, _ = _node(catalog, Cloud.AWS, "us-east-1", "c6i.large")
    assert result.priced_as == {"dep-1": "aws/us-east-1"}
    assert result.total_cost == pytest.approx(24 * on_demand / 2, abs=1e-4)


def test_recommendations_name_costly_idle_and_on_demand_deployments(
    pricing: PricingOptions,
) -> None:
    big = make_facts("big", cpu="4", memory="8Gi", model_size_bytes=0)
    small = make_facts("small", model_size_bytes=0)
    tiny = make_facts("tiny", deployment_type="serverless", model_size_bytes=0)
    samples = [
        make_sample(hour, deployment_id="big", instances=3, requests=150_000, latency_ms=100.0)
        for hour in hours(240)
    ] + [make_sample(hour, deployment_id="small", requests=10) for hour in hours(240)]
    facts = {item.id: item for item in (big, small, tiny)}
    result = analyze_cost(facts, samples, TEN_DAYS, pricing)
    kinds = {item.type: item for item in result.recommendations}
    assert "big" in kinds["high_cost_deployments"].message
    assert "small" not in kinds["high_cost_deployments"].message
    assert "small" in kinds["serverless_migration"].message
    assert "big" not in kinds["serverless_migration"].message  # busy 35% of the time
    assert "big, small" in kinds["spot_instances"].message
    assert result.cost_by_deployment["tiny"] == 0.0


def test_samples_of_other_deployments_are_ignored(pricing: PricingOptions) -> None:
    """The engine prices only the deployments it is given, whatever samples come along."""
    mine = make_facts("mine", model_size_bytes=0)
    samples = [make_sample(hour, deployment_id="mine") for hour in hours(24)]
    alone = analyze_cost({mine.id: mine}, samples, TEN_DAYS, pricing)
    foreign = [make_sample(hour, deployment_id="theirs", instances=50) for hour in hours(240)]
    mixed = analyze_cost({mine.id: mine}, samples + foreign, TEN_DAYS, pricing)
    assert mixed == alone
