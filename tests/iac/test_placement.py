"""Multi-cloud placement: a real choice among every place that can run the deployment, and a
choice that is always deployable."""

from __future__ import annotations

from typing import Any

import pytest

from aideploy.errors import InputError
from aideploy.schema import Cloud, DeploymentType
from aideploy_iac.args import resolve_spec
from aideploy_iac.placement import choose_placement
from aideploy_iac.pricing import estimate_monthly_cost, load_catalog
from tests.iac.conftest import ECR_IMAGE, IMAGE, MODEL_URIS, STORAGE_ACCOUNT_ID, Synth

EVERY_COPY = {
    "aws": MODEL_URIS["aws"],
    "gcp": MODEL_URIS["gcp"],
    "azure": "az://models/sentiment/model.onnx",
}


def _serverless(**overrides: Any) -> dict[str, Any]:
    return {
        "image": IMAGE,
        "deployment_type": "serverless",
        "resource_requirements": {"cpu": "1", "memory": "2Gi"},
        "cost_optimization_policy": {"multi_cloud_enabled": True, "hibernation_enabled": True},
        "model_storage_account_id": STORAGE_ACCOUNT_ID,
        **overrides,
    }


def _places(clouds: set[Cloud], regions: set[str] | None = None) -> set[str]:
    return {
        f"{cloud.value}/{region}"
        for cloud, region in load_catalog().places()
        if cloud in clouds and (regions is None or region in regions)
    }


def _cheapest(args: dict[str, Any], places: set[str]) -> str:
    """The cheapest of ``places``, priced directly from the catalog."""
    spec, _ = resolve_spec("sentiment", args, model_uri="https://models.example.com/m.onnx")
    catalog = load_catalog()
    estimates = [
        estimate_monthly_cost(
            catalog,
            cloud=cloud,
            region=region,
            deployment_type=DeploymentType(args["deployment_type"]),
            resources=spec.resources,
            scaling=spec.scaling,
            cost=spec.cost,
        )
        for cloud, region in catalog.places()
        if f"{cloud.value}/{region}" in places
    ]
    return min(estimates, key=lambda estimate: (estimate.total, estimate.place)).place


def test_per_cloud_copies_let_placement_choose_any_cloud(synth_deployment: Synth) -> None:
    args = _serverless(model_uris=EVERY_COPY)
    result = synth_deployment(args)
    outputs = result.named("sentiment").outputs
    choice = outputs["placement_choice"]
    # The image is not in ECR, so Lambda is out; Cloud Run and Container Apps compete.
    assert choice == _cheapest(args, _places({Cloud.GCP, Cloud.AZURE}))
    assert outputs["cloud"] == choice.split("/")[0]
    assert outputs["region"] == choice.split("/")[1]
    assert outputs["placement_runner_up"] != choice
    child = next(r for r in result.resources if r.parent_name == "sentiment")
    cloud = Cloud(outputs["cloud"])
    uri = EVERY_COPY[cloud.value]
    container = (
        child.name + ("-service" if cloud is Cloud.GCP else "-app"),
        "envs" if cloud is Cloud.GCP else "env",
    )
    inputs = result.named(container[0]).inputs["template"]["containers"][0][container[1]]
    environment = {item["name"]: item.get("value") for item in inputs}
    assert environment["AIDEPLOY_SERVE_MODEL_URI"] == uri, "the chosen cloud's own copy"


def test_a_public_https_model_can_go_to_every_cloud() -> None:
    args = _serverless(model_uri="https://models.example.com/sentiment/model.onnx", image=ECR_IMAGE)
    spec, _ = resolve_spec("sentiment", args)
    decision = choose_placement(load_catalog(), spec, DeploymentType.SERVERLESS)
    runnable = _places({Cloud.GCP, Cloud.AZURE}) | {"aws/us-east-1"}
    assert {reason.split(":")[0] for reason in decision.rejected} == (
        _places({Cloud.AWS, Cloud.GCP, Cloud.AZURE}) - runnable
    ), "only Lambda outside the image's region is out"
    assert all("ECR region us-east-1" in reason for reason in decision.rejected)
    assert decision.choice.place == _cheapest(args, runnable)


def test_an_s3_model_with_a_non_ecr_image_never_picks_aws(synth_deployment: Synth) -> None:
    only_s3 = _serverless(model_uri=MODEL_URIS["aws"])
    with pytest.raises(InputError) as refused:
        synth_deployment(only_s3)
    message = str(refused.value)
    assert message.startswith("cost_optimization_policy.multi_cloud_enabled: no catalogued cloud")
    assert (
        "aws/us-east-1: image: 'ghcr.io/acme/aideploy-serving:1.0' is not an Amazon ECR" in message
    )
    assert "gcp/us-central1: model_uri:" in message, "a gs:// copy is missing, said per place"
    with_copies = _serverless(model_uri=MODEL_URIS["aws"], model_uris={"gcp": MODEL_URIS["gcp"]})
    outputs = synth_deployment(with_copies).named("sentiment").outputs
    assert outputs["cloud"] == "gcp"
    assert not outputs["placement_runner_up"].startswith("aws/")


def test_lambda_is_placed_only_in_its_images_region() -> None:
    args = _serverless(model_uri=MODEL_URIS["aws"], image=ECR_IMAGE)
    spec, _ = resolve_spec("sentiment", args)
    decision = choose_placement(load_catalog(), spec, DeploymentType.SERVERLESS)
    assert decision.choice.place == "aws/us-east-1"
    assert decision.runner_up is None
    assert any(
        reason.startswith("aws/") and "ECR region us-east-1" in reason
        for reason in decision.rejected
    )


def test_container_apps_naming_rules_are_part_of_placement() -> None:
    long_name = "a-name-longer-than-container-apps-allow"  # 39 characters: fine on Cloud Run
    args = _serverless(model_uris=EVERY_COPY, deployment_name=long_name)
    spec, _ = resolve_spec("sentiment", args, model_uri=EVERY_COPY["gcp"])
    decision = choose_placement(
        load_catalog(),
        spec,
        DeploymentType.SERVERLESS,
        model_uris={Cloud(key): value for key, value in EVERY_COPY.items()},
    )
    assert decision.choice.cloud is not Cloud.AZURE
    assert any(
        reason.startswith("azure/") and "not a valid Azure Container Apps name" in reason
        for reason in decision.rejected
    )


def test_kubernetes_placement_deploys_to_the_chosen_places_cluster(synth_deployment: Synth) -> None:
    clusters = {"aws/us-east-1": "eks-prod", "gcp/europe-west4": "gke-prod"}
    args = {
        "model_uri": "https://models.example.com/sentiment/model.onnx",
        "image": IMAGE,
        "clusters": clusters,
        "cost_optimization_policy": {"multi_cloud_enabled": True, "use_spot_instances": True},
    }
    result = synth_deployment(args)
    outputs = result.named("sentiment").outputs
    assert outputs["placement_choice"] in clusters
    assert {outputs["placement_choice"], outputs["placement_runner_up"]} == set(clusters)
    assert outputs["placement_choice"] == _cheapest(
        {**args, "deployment_type": "kubernetes"}, set(clusters)
    )
    provider = result.named("sentiment-cluster").inputs
    assert provider["context"] == clusters[outputs["placement_choice"]]
    pod = result.named("sentiment-kubernetes-deployment").inputs["spec"]["template"]["spec"]
    preferred = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    spot_label = {"aws": "eks.amazonaws.com/capacityType", "gcp": "cloud.google.com/gke-spot"}
    assert [term["preference"]["matchExpressions"][0]["key"] for term in preferred] == [
        spot_label[outputs["cloud"]]
    ], "only the chosen cluster's spot label"
    assert result.named("sentiment-kubernetes").provider is None, "components carry no provider"
    assert all(
        resource.provider is not None and "::sentiment-cluster::" in resource.provider
        for resource in result.children_of("sentiment-kubernetes")
    )


def test_clusters_outside_the_catalog_are_never_chosen_and_unused_clusters_warn(
    synth_deployment: Synth,
) -> None:
    args = {
        "model_uri": MODEL_URIS["aws"],
        "image": IMAGE,
        "clusters": {"aws/mars-central-1": "mars"},
        "cost_optimization_policy": {"multi_cloud_enabled": True},
    }
    with pytest.raises(InputError, match=r"aws/us-east-1: clusters: no cluster for aws/us-east-1"):
        synth_deployment(args)
    explicit = synth_deployment(
        {
            **args,
            "target": {"cloud": "aws", "cluster": "eks-prod"},
            "clusters": {"aws/us-east-1": "x"},
        }
    )
    assert any(
        w.startswith("clusters: used only by Kubernetes multi-cloud placement")
        for w in explicit.named("sentiment").outputs["warnings"]
    )
