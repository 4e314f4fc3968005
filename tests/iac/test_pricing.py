"""The price catalog and the cost arithmetic placement and analytics share."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from pydantic import BaseModel

from aideploy.errors import InputError
from aideploy.schema import (
    Cloud,
    CostOptimizationPolicy,
    DeploymentType,
    ResourceRequirements,
    ScalingPolicy,
)
from aideploy_iac.args import resolve_spec
from aideploy_iac.placement import choose_placement
from aideploy_iac.policies import replica_split
from aideploy_iac.pricing import (
    HOURS_PER_MONTH,
    CatalogError,
    Price,
    UsageProfile,
    estimate_monthly_cost,
    load_catalog,
    managed_endpoint_cost,
    node_for,
)

CATALOG_FILE = Path(__file__).parents[2] / "aideploy_iac" / "pricing" / "catalog.json"


def _prices(value: object) -> list[Price]:
    """Every Price in a catalog subtree."""
    if isinstance(value, Price):
        return [value]
    if isinstance(value, dict):
        return [price for item in value.values() for price in _prices(item)]
    if isinstance(value, list):
        return [price for item in value for price in _prices(item)]
    if isinstance(value, BaseModel):
        return [
            price for name in type(value).model_fields for price in _prices(getattr(value, name))
        ]
    return []


def test_catalog_covers_three_clouds_two_regions_each_with_sourced_prices() -> None:
    catalog = load_catalog()
    assert set(catalog.clouds) == {Cloud.AWS, Cloud.GCP, Cloud.AZURE}
    for cloud_prices in catalog.clouds.values():
        assert len(cloud_prices.regions) >= 2
        for region in cloud_prices.regions.values():
            assert any(node.gpu for node in region.nodes), "a GPU node type per region"
            assert region.managed_endpoint.instances
    prices = _prices(catalog)
    assert len(prices) > 100
    for price in prices:
        assert price.source.scheme == "https"
        assert price.read_on <= date.today()
    assert "refresh" in catalog.note


def test_spot_prices_are_marked_as_estimates_with_their_derivation() -> None:
    for cloud_prices in load_catalog().clouds.values():
        for region in cloud_prices.regions.values():
            for node in region.nodes:
                assert node.on_demand_hourly.basis == "list_price"
                spot = node.spot_hourly
                assert spot.basis == "estimate", node.instance_type
                assert spot.derivation is not None
                share = int(spot.derivation.split("%")[0]) / 100
                assert spot.value == pytest.approx(node.on_demand_hourly.value * share, abs=0.006)


def test_an_estimate_without_its_derivation_is_refused() -> None:
    with pytest.raises(ValueError, match="derivation"):
        Price.model_validate(
            {
                "value": 1,
                "source": "https://x.example",
                "read_on": "2026-01-01",
                "basis": "estimate",
            }
        )


def test_a_broken_catalog_is_reported_with_the_field(tmp_path: Path) -> None:
    data = json.loads(CATALOG_FILE.read_text())
    del data["clouds"]["gcp"]["regions"]["us-central1"]["egress_gib"]["source"]
    broken = tmp_path / "catalog.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(
        CatalogError, match=r"clouds\.gcp\.regions\.us-central1\.egress_gib\.source: Field required"
    ):
        load_catalog(broken)
    with pytest.raises(CatalogError, match="No such file"):
        load_catalog(tmp_path / "absent.json")


def test_unknown_region_names_the_catalogued_ones() -> None:
    with pytest.raises(
        InputError, match=r"target\.region: 'mars-1' .*catalogued: eu-west-1, us-east-1"
    ):
        load_catalog().region(Cloud.AWS, "mars-1")


def test_kubernetes_estimate_by_hand() -> None:
    """Two always-on 1-cpu/2Gi instances on us-east-1; one on-demand, one on spot."""
    catalog = load_catalog()
    prices = catalog.region(Cloud.AWS, "us-east-1")
    resources = ResourceRequirements(cpu="1", memory="2Gi")
    estimate = estimate_monthly_cost(
        catalog,
        cloud=Cloud.AWS,
        region="us-east-1",
        deployment_type=DeploymentType.KUBERNETES,
        resources=resources,
        scaling=ScalingPolicy(min_instances=2, max_instances=4),
        cost=CostOptimizationPolicy(use_spot_instances=True, on_demand_base_instances=1),
        usage=UsageProfile(requests_per_month=0, egress_gib_per_month=10, model_size_gib=2),
    )
    # c6i.large (2 vCPU, 4 GiB) is the cheapest fit: half a node per instance.
    on_demand = 0.5 * 0.085 * HOURS_PER_MONTH
    spot = 0.5 * 0.034 * HOURS_PER_MONTH
    assert estimate.instance_type == "c6i.large"
    assert estimate.compute == pytest.approx(on_demand + spot, abs=0.01)
    assert estimate.storage == pytest.approx(2 * 0.023, abs=0.01)
    assert estimate.network == pytest.approx(10 * 0.09, abs=0.01)
    assert node_for(prices, resources, spot=False)[1] == pytest.approx(0.0425)


def test_kubernetes_estimate_prices_the_replicas_actually_deployed() -> None:
    """With spot and an on-demand floor of 1 and min_instances 1, the deployment runs the
    on-demand replica plus one autoscaled spot replica (an HPA cannot go to zero): 2, not 1."""
    catalog = load_catalog()
    scaling = ScalingPolicy(min_instances=1, max_instances=4)
    cost = CostOptimizationPolicy(use_spot_instances=True, on_demand_base_instances=1)
    assert replica_split(scaling, cost).total_min == 2
    estimate = estimate_monthly_cost(
        catalog,
        cloud=Cloud.AWS,
        region="us-east-1",
        deployment_type=DeploymentType.KUBERNETES,
        resources=ResourceRequirements(cpu="1", memory="2Gi"),
        scaling=scaling,
        cost=cost,
        usage=UsageProfile(requests_per_month=0),
    )
    assert estimate.compute == pytest.approx(0.5 * (0.085 + 0.034) * HOURS_PER_MONTH, abs=0.01)


def test_lambda_estimate_by_hand() -> None:
    catalog = load_catalog()
    estimate = estimate_monthly_cost(
        catalog,
        cloud=Cloud.AWS,
        region="us-east-1",
        deployment_type=DeploymentType.SERVERLESS,
        resources=ResourceRequirements(cpu="1", memory="2Gi"),
        scaling=ScalingPolicy(min_instances=0, max_instances=10),
        cost=CostOptimizationPolicy(hibernation_enabled=True),
        usage=UsageProfile(
            requests_per_month=3_000_000, avg_request_seconds=0.1, egress_gib_per_month=0
        ),
    )
    expected = 3_000_000 * 0.1 * 2 * 0.0000166667 + 3 * 0.20
    assert estimate.compute == pytest.approx(expected, abs=0.01)
    assert estimate.network == 0


def test_scale_to_zero_is_cheaper_when_traffic_is_sparse() -> None:
    def month(cost: CostOptimizationPolicy) -> float:
        return estimate_monthly_cost(
            load_catalog(),
            cloud=Cloud.GCP,
            region="us-central1",
            deployment_type=DeploymentType.KUBERNETES,
            resources=ResourceRequirements(),
            scaling=ScalingPolicy(min_instances=1, max_instances=3),
            cost=cost,
            usage=UsageProfile(requests_per_month=10_000, active_hours_per_month=20),
        ).compute

    assert (
        month(CostOptimizationPolicy(hibernation_enabled=True))
        < month(CostOptimizationPolicy()) / 10
    )


def test_managed_endpoint_is_billed_per_whole_instance() -> None:
    prices = load_catalog().region(Cloud.AWS, "us-east-1")
    cost = managed_endpoint_cost(
        prices, ResourceRequirements(cpu="1", memory="2Gi"), instance_hours=730
    )
    assert cost == pytest.approx(730 * 0.115)  # ml.m5.large
    with pytest.raises(InputError, match="no Amazon SageMaker real-time inference instance fits"):
        managed_endpoint_cost(
            prices, ResourceRequirements(cpu="64", memory="2Gi"), instance_hours=1
        )


def test_usage_profile_validates() -> None:
    with pytest.raises(InputError, match=r"usage\.active_hours_per_month"):
        UsageProfile(active_hours_per_month=800)


def test_placement_ranks_every_feasible_place() -> None:
    spec, _ = resolve_spec(
        "ranker",
        {
            "model_uri": "s3://m/model.onnx",
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/serve:1",
            "resource_requirements": {"cpu": "2", "memory": "4Gi"},
        },
    )
    catalog = load_catalog()
    every_cluster = {f"{cloud.value}/{region}": "context" for cloud, region in catalog.places()}
    anywhere = {Cloud.GCP: "gs://m/model.onnx", Cloud.AZURE: "az://m/model.onnx"}
    decision = choose_placement(
        catalog, spec, DeploymentType.KUBERNETES, model_uris=anywhere, clusters=every_cluster
    )
    assert decision.runner_up is not None
    assert decision.choice.total <= decision.runner_up.total
    assert decision.rejected == ()
    only_aws = choose_placement(catalog, spec, DeploymentType.KUBERNETES, clusters=every_cluster)
    assert only_aws.choice.cloud is Cloud.AWS, "pods elsewhere could not read the s3:// model"
    serverless = choose_placement(load_catalog(), spec, DeploymentType.SERVERLESS)
    assert serverless.choice.cloud is Cloud.AWS, "an s3:// model is readable only from Lambda"
    assert any(reason.startswith("gcp/") and "gs://" in reason for reason in serverless.rejected)
