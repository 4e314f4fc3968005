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


def _control_plane(catalog: PriceCatalog, cloud: Cloud) -> float:
    return catalog.clouds[cloud].kubernetes_control_plane_hourly.value


def test_kubernetes_cost_is_instance_hours_at_the_node_share(
    catalog: PriceCatalog, pricing: PricingOptions
) -> None:
    """1 cpu / 2Gi on AWS: half a c6i.large (2 vCPU, 4 GiB) is the cheapest fit; the EKS
    control plane is the deployment's alone."""
    facts = make_facts(cpu="1", memory="2Gi", model_size_bytes=GIB)
    samples = [
        make_sample(hour, requests=100, bytes_out=GIB // 24) for hour in hours(240)
    ]  # 10 days, one instance all along, 10 GiB out in total
    result = analyze_cost({facts.id: facts}, samples, TEN_DAYS, pricing)

    on_demand, _ = _node(catalog, Cloud.AWS, "us-east-1", "c6i.large")
    region = catalog.region(Cloud.AWS, "us-east-1")
    compute = 240 * on_demand / 2 + 240 * _control_plane(catalog, Cloud.AWS)
    storage = 1 * (240 / 730) * region.object_storage_gib_month.value
    network = 240 * (GIB // 24) / GIB * region.egress_gib.value
    assert result.cost_breakdown.compute == pytest.approx(compute, abs=1e-4)
    assert result.cost_breakdown.storage == pytest.approx(storage, abs=1e-4)
    assert result.cost_breakdown.network == pytest.approx(network, abs=1e-4)
    assert result.total_cost == pytest.approx(compute + storage + network, abs=1e-4)
    assert result.cost_by_type == {"kubernetes": result.total_cost, "serverless": 0.0}
    assert result.cost_by_deployment == {"dep-1": result.total_cost}
    assert result.priced_as == {"dep-1": "aws/us-east-1"}
    assert len(result.cost_by_day) == 10
    assert sum(result.cost_by_day.values()) == pytest.approx(result.total_cost, abs=1e-3)

    # SageMaker: one ml.m5.large all along, plus the same storage and egress on AWS.
    sagemaker = 240 * _managed(catalog, Cloud.AWS, "us-east-1", "ml.m5.large") + storage + network
    assert result.comparison.our_platform == result.total_cost
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
    # The assumptions that favour our side are stated, and so is what the prices are.
    notes = "\n".join(result.notes)
    assert "perfectly packed" in notes
    assert "control plane of the default aws/us-east-1 cluster costs 0.1 USD/h" in notes
    assert "among your 1 Kubernetes deployment(s)" in notes
    assert "c6i.large in aws/us-east-1 at 40% of its on-demand price" in notes
    assert f"catalog {catalog.version}: {catalog.note}" in notes


def test_deployments_on_one_cluster_share_its_control_plane(
    catalog: PriceCatalog, pricing: PricingOptions
) -> None:
    """While two deployments run on a cluster they pay half of its control plane each; alone,
    all of it; another cluster is its own. The shares add up to the cluster's time."""
    first = make_facts("a", model_size_bytes=0, target={"cloud": "aws", "cluster": "prod"})
    late = make_facts(
        "b", model_size_bytes=0, target={"cloud": "aws", "cluster": "prod"},
        created_at=EPOCH + timedelta(days=8),
    )  # fmt: skip
    alone = make_facts("c", model_size_bytes=0, target={"cloud": "aws", "cluster": "lab"})
    facts = {item.id: item for item in (first, late, alone)}
    samples = [
        make_sample(hour, deployment_id=key)
        for key in facts
        for hour in hours(240)
        if hour >= facts[key].deployment.created_at
    ]
    result = analyze_cost(facts, samples, TEN_DAYS, pricing)
    on_demand, _ = _node(catalog, Cloud.AWS, "us-east-1", "c6i.large")
    plane = _control_plane(catalog, Cloud.AWS)
    assert result.cost_by_deployment["a"] == pytest.approx(240 * on_demand / 2 + 216 * plane)
    assert result.cost_by_deployment["b"] == pytest.approx(48 * on_demand / 2 + 24 * plane)
    assert result.cost_by_deployment["c"] == pytest.approx(240 * on_demand / 2 + 240 * plane)
    assert sum(result.cost_by_day.values()) == pytest.approx(result.total_cost, abs=1e-3)
    assert any("prod" in note and "your 2 Kubernetes" in note for note in result.notes)


def test_spot_with_an_on_demand_base(catalog: PriceCatalog, pricing: PricingOptions) -> None:
    """Two instances all along, one kept on-demand: one at the on-demand, one at the spot share."""
    facts = make_facts(
        cost_optimization_policy={"use_spot_instances": True, "on_demand_base_instances": 1},
        model_size_bytes=0,
    )
    samples = [make_sample(hour, instances=2) for hour in hours(240)]
    result = analyze_cost({facts.id: facts}, samples, TEN_DAYS, pricing)
    on_demand, spot = _node(catalog, Cloud.AWS, "us-east-1", "c6i.large")
    nodes = 240 * (on_demand + spot) / 2
    assert result.cost_breakdown.compute == pytest.approx(
        nodes + 240 * _control_plane(catalog, Cloud.AWS), abs=1e-4
    )
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
    assert result.cost_by_type == {
        "kubernetes": 0.0,
        "serverless": pytest.approx(expected, abs=1e-4),
    }


def test_lambda_cost_by_hand(catalog: PriceCatalog, pricing: PricingOptions) -> None:
    """Lambda, 2 GiB: one request per instance, memory-seconds only, plus the request fee; one
    provisioned (min_instances) instance is billed at the idle rate when it is not busy."""
    lam = catalog.region(Cloud.AWS, "us-east-1").serverless
    assert lam.idle_gib_second is not None
    samples = [
        make_sample(hour, requests=3600, latency_ms=250.0, instances=1.0) for hour in hours(240)
    ]  # 864,000 requests of 250 ms: 216,000 busy seconds
    busy = 864_000 * 0.25
    requests = 0.864 * lam.million_requests.value
    on_demand = make_facts(
        deployment_type="serverless", memory="2Gi", model_size_bytes=0,
        scaling_policy={"min_instances": 0},
    )  # fmt: skip
    result = analyze_cost({on_demand.id: on_demand}, samples, TEN_DAYS, pricing)
    assert result.cost_breakdown.compute == pytest.approx(
        busy * 2 * lam.gib_second.value + requests, abs=1e-4
    )
    provisioned = make_facts(deployment_type="serverless", memory="2Gi", model_size_bytes=0)
    result = analyze_cost({provisioned.id: provisioned}, samples, TEN_DAYS, pricing)
    idle = 240 * 3600 - busy
    assert result.cost_breakdown.compute == pytest.approx(
        busy * 2 * lam.gib_second.value + idle * 2 * lam.idle_gib_second.value + requests,
        abs=1e-4,
    )


def test_container_apps_cost_by_hand(catalog: PriceCatalog, pricing: PricingOptions) -> None:
    """Container Apps, 0.5 vCPU / 1 GiB with one warm replica: busy time at the active vCPU and
    memory rates, the rest of the warm replica's time at the idle rates, the request fee."""
    aca = catalog.region(Cloud.AZURE, "eastus").serverless
    assert aca.vcpu_second is not None
    assert aca.idle_vcpu_second is not None
    assert aca.idle_gib_second is not None
    facts = make_facts(
        deployment_type="serverless", cloud="azure", region="eastus", cpu="0.5", memory="1Gi",
        model_size_bytes=0, scaling_policy={"min_instances": 1},
    )  # fmt: skip
    samples = [make_sample(hour, requests=7200, latency_ms=100.0) for hour in hours(240)]
    result = analyze_cost({facts.id: facts}, samples, TEN_DAYS, pricing)
    busy = 240 * 7200 * 0.1  # one request at a time on half a core
    idle = 240 * 3600 - busy
    expected = (
        busy * (0.5 * aca.vcpu_second.value + 1 * aca.gib_second.value)
        + idle * (0.5 * aca.idle_vcpu_second.value + 1 * aca.idle_gib_second.value)
        + 240 * 7200 / 1e6 * aca.million_requests.value
    )
    assert result.cost_breakdown.compute == pytest.approx(expected, abs=1e-4)
    assert result.priced_as == {"dep-1": "azure/eastus"}


def test_local_deployments_are_priced_in_the_reference_cloud(
    catalog: PriceCatalog, pricing: PricingOptions
) -> None:
    facts = make_facts(cloud="local", region=None, model_size_bytes=0)
    samples = [make_sample(hour) for hour in hours(24)]
    day = Window(EPOCH, EPOCH + timedelta(days=1))
    result = analyze_cost({facts.id: facts}, samples, day, pricing)
    on_demand, _ = _node(catalog, Cloud.AWS, "us-east-1", "c6i.large")
    assert result.priced_as == {"dep-1": "aws/us-east-1"}
    assert result.total_cost == pytest.approx(
        24 * on_demand / 2 + 24 * _control_plane(catalog, Cloud.AWS), abs=1e-4
    )
    assert any("cluster local deployments are priced on" in note for note in result.notes)


def test_unreported_deployments_are_not_free_nor_compared(
    catalog: PriceCatalog, pricing: PricingOptions
) -> None:
    """Without a single report, a Kubernetes deployment still costs its standing instance (the
    autoscaler's floor of one) for its whole life; a scale-to-zero one costs storage only; both
    say why and neither enters the comparison, which covers the reporting deployment alone."""
    silent = make_facts("silent", model_size_bytes=GIB, scaling_policy={"min_instances": 0})
    idle = make_facts(
        "idle", deployment_type="serverless", model_size_bytes=0,
        scaling_policy={"min_instances": 0},
    )  # fmt: skip
    busy = make_facts("busy", model_size_bytes=0, target={"cloud": "aws", "cluster": "other"})
    facts = {item.id: item for item in (silent, idle, busy)}
    samples = [make_sample(hour, deployment_id="busy") for hour in hours(240)]
    result = analyze_cost(facts, samples, TEN_DAYS, pricing)

    on_demand, _ = _node(catalog, Cloud.AWS, "us-east-1", "c6i.large")
    region = catalog.region(Cloud.AWS, "us-east-1")
    plane = 240 * _control_plane(catalog, Cloud.AWS)
    storage = (240 / 730) * region.object_storage_gib_month.value
    assert result.cost_by_deployment["silent"] == pytest.approx(
        240 * on_demand / 2 + plane + storage, abs=1e-4
    )
    assert result.cost_by_deployment["idle"] == 0.0
    notes = "\n".join(result.notes)
    assert "silent: no usage reported in this window" in notes
    assert "charged only its 1 standing instance(s) for 240.0 h" in notes
    assert "idle: no usage reported in this window and it keeps no instance running" in notes
    assert "compute cost is unknown" in notes
    assert "busy:" not in notes

    alone = analyze_cost({"busy": busy}, samples, TEN_DAYS, pricing)
    assert result.comparison == alone.comparison  # the silent ones are left out of both sides
    assert result.comparison.our_platform == pytest.approx(
        result.total_cost - result.cost_by_deployment["silent"], abs=1e-3
    )
    assert all(value < 100.0 for value in result.comparison.savings_percentage.values())


def test_partly_reported_deployments_are_charged_their_standing_instances(
    catalog: PriceCatalog, pricing: PricingOptions
) -> None:
    """Reports for one day of ten: the standing instance is charged for all ten, and a note
    says how little was reported."""
    facts = make_facts(model_size_bytes=0)
    samples = [make_sample(hour, requests=10) for hour in hours(24)]
    result = analyze_cost({facts.id: facts}, samples, TEN_DAYS, pricing)
    on_demand, _ = _node(catalog, Cloud.AWS, "us-east-1", "c6i.large")
    assert result.cost_breakdown.compute == pytest.approx(
        240 * on_demand / 2 + 240 * _control_plane(catalog, Cloud.AWS), abs=1e-4
    )
    assert any("reported for only 10% of the time" in note for note in result.notes)


def test_hibernated_and_failed_deployments_keep_nothing_running(
    pricing: PricingOptions,
) -> None:
    for status in ("hibernated", "failed"):
        facts = make_facts(model_size_bytes=0, status=status)
        result = analyze_cost({facts.id: facts}, [], TEN_DAYS, pricing)
        assert result.cost_breakdown.compute == pytest.approx(
            240 * _control_plane(pricing.catalog, Cloud.AWS), abs=1e-4
        ), status


def test_recommendations_name_costly_idle_and_on_demand_deployments(
    catalog: PriceCatalog, pricing: PricingOptions
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
    # tiny never reported: its one provisioned Lambda instance (min_instances 1) stood idle.
    lam = catalog.region(Cloud.AWS, "us-east-1").serverless
    assert lam.idle_gib_second is not None
    assert result.cost_by_deployment["tiny"] == pytest.approx(
        240 * 3600 * 2 * lam.idle_gib_second.value, abs=1e-4
    )


def test_samples_of_other_deployments_are_ignored(pricing: PricingOptions) -> None:
    """The engine prices only the deployments it is given, whatever samples come along."""
    mine = make_facts("mine", model_size_bytes=0)
    samples = [make_sample(hour, deployment_id="mine") for hour in hours(24)]
    alone = analyze_cost({mine.id: mine}, samples, TEN_DAYS, pricing)
    foreign = [make_sample(hour, deployment_id="theirs", instances=50) for hour in hours(240)]
    mixed = analyze_cost({mine.id: mine}, samples + foreign, TEN_DAYS, pricing)
    assert mixed == alone
