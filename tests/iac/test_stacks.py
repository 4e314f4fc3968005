"""The root project's programs: config parsing, dispatch, and the platform graphs."""

from __future__ import annotations

import base64
import json
import runpy
from typing import Any

import pytest

from aideploy.errors import InputError
from aideploy_iac.platform.keda import DEFAULT_KEDA_CHART_VERSION
from aideploy_iac.synth import SynthResult, synthesize
from stacks.config import (
    DeploymentsConfig,
    PlatformConfig,
    Program,
    load_deployments_config,
    load_platform_config,
    load_program,
)
from stacks.programs import platform

DEPLOYMENTS = [
    {
        "name": "sentiment",
        "model_id": "m-1",
        "model_uri": "gs://acme/sentiment.onnx",
        "deployment_type": "serverless",
        "target": {"cloud": "gcp", "region": "europe-west4"},
        "cost_optimization_policy": {"hibernation_enabled": True},
    },
    {
        "name": "ranker",
        "model_id": "m-2",
        "model_uri": "s3://acme/ranker.onnx",
        "options": {"namespace": "ml"},
    },
]
AZURE_CREDENTIALS = {
    "azure-native:containerservice:listManagedClusterUserCredentials": lambda args: {
        "kubeconfigs": [
            {
                "name": "clusterUser",
                "value": base64.b64encode(b"apiVersion: v1\nkind: Config\n").decode(),
            }
        ]
    }
}


def _run_main(config: dict[str, Any], **kwargs: Any) -> SynthResult:
    """Run ``stacks/__main__.py`` as ``pulumi up`` would, with the stack's config."""
    encoded = {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()
    }
    return synthesize(
        lambda: runpy.run_module("stacks.__main__", run_name="__main__"), config=encoded, **kwargs
    )


def test_deployments_program_from_stack_config() -> None:
    result = _run_main(
        {
            "aideploy:program": "deployments",
            "aideploy:image": "ghcr.io/acme/serve:1",
            "aideploy:deployments": DEPLOYMENTS,
        }
    )
    assert result.named("sentiment-cloud-run").parent_name == "sentiment"
    assert result.named("ranker-kubernetes-deployment").inputs["metadata"]["namespace"] == "ml"
    exported = result.exports["sentiment"]
    assert exported["target_kind"] == "gcp-cloud-run"
    assert exported["region"] == "europe-west4"
    assert exported["effective_hibernation_enabled"] is True
    assert result.exports["ranker"]["endpoint_url"] == "http://ranker.ml.svc.cluster.local:8080"


def test_program_defaults_to_deployments_and_rejects_unknown_ones() -> None:
    seen: list[Program] = []
    synthesize(lambda: seen.append(load_program()))
    assert seen == [Program.DEPLOYMENTS]
    with pytest.raises(
        InputError, match=r"aideploy:program: 'cluster' is not one of deployments, platform"
    ):
        synthesize(load_program, config={"aideploy:program": "cluster"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, r"aideploy:deployments: required"),
        (
            {
                "aideploy:deployments": json.dumps(
                    [{"name": "x", "model_id": "m", "model_uris": {"mars": "s3://b/k"}}]
                )
            },
            r"aideploy:deployments: \[0\]\.model_uris\.mars\.\[key\]: Input should be",
        ),
        (
            {
                "aideploy:deployments": json.dumps(
                    [{**DEPLOYMENTS[1], "name": "a"}, {**DEPLOYMENTS[1], "name": "a"}]
                )
            },
            r"deployment names must be unique; repeated: a",
        ),
    ],
)
def test_bad_deployments_config_names_the_field(config: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        synthesize(load_deployments_config, config=config)


def test_deployment_without_an_image_or_a_model_is_refused() -> None:
    with pytest.raises(InputError, match=r"ranker\.image: no serving image"):
        _run_main({"aideploy:deployments": [DEPLOYMENTS[1]]})
    without_model = {key: value for key, value in DEPLOYMENTS[1].items() if key != "model_uri"}
    with pytest.raises(InputError, match=r"ranker\.model_uri: required \(or model_uris"):
        _run_main(
            {"aideploy:image": "ghcr.io/acme/serve:1", "aideploy:deployments": [without_model]}
        )


def test_platform_config_validation() -> None:
    with pytest.raises(InputError, match=r"aideploy:clouds\.0: project is required for gcp"):
        synthesize(
            load_platform_config,
            config={"aideploy:clouds": json.dumps([{"cloud": "gcp", "region": "us-central1"}])},
        )
    with pytest.raises(InputError, match=r"aideploy:clouds: required"):
        synthesize(load_platform_config)


def test_platform_program_builds_every_cloud() -> None:
    clouds = [
        {"cloud": "aws", "region": "us-east-1", "max_spot_nodes": 6},
        {"cloud": "gcp", "region": "europe-west4", "project": "acme-ml"},
        {
            "cloud": "azure",
            "region": "westeurope",
            "spot_node_types": ["Standard_D4s_v5", "Standard_D8s_v5"],
        },
    ]
    result = _run_main(
        {"aideploy:program": "platform", "aideploy:clouds": clouds}, call_results=AZURE_CREDENTIALS
    )
    types = {resource.type for resource in result}
    assert {
        "aideploy:index:AwsPlatform",
        "aideploy:index:GcpPlatform",
        "aideploy:index:AzurePlatform",
        "aideploy:index:Keda",
        "aws:eks/cluster:Cluster",
        "gcp:container/cluster:Cluster",
        "azure-native:containerservice:ManagedCluster",
        "aws:ecr/repository:Repository",
        "gcp:artifactregistry/repository:Repository",
        "azure-native:containerregistry:Registry",
    } <= types
    aws_spot = result.named("aideploy-aws-us-east-1-spot-nodes")
    assert aws_spot.inputs["capacityType"] == "SPOT"
    assert aws_spot.inputs["scalingConfig"] == {"minSize": 0, "desiredSize": 0, "maxSize": 6}
    gke_spot = result.named("aideploy-gcp-europe-west4-spot-nodes-0")
    assert gke_spot.inputs["nodeConfig"]["spot"] is True
    aks_spot = sorted(
        result.of_type("azure-native:containerservice:AgentPool"), key=lambda pool: pool.name
    )
    assert [pool.inputs["vmSize"] for pool in aks_spot] == ["Standard_D4s_v5", "Standard_D8s_v5"]
    assert all(pool.inputs["scaleSetPriority"] == "Spot" for pool in aks_spot)
    releases = {
        r.inputs["chart"]: r.inputs["version"]
        for r in result.of_type("kubernetes:helm.sh/v3:Release")
    }
    assert releases == {"keda": DEFAULT_KEDA_CHART_VERSION, "keda-add-ons-http": "0.16.0"}
    # Pods read models through each cluster's workload identity; clusters pull from the registry.
    agent = result.named("aideploy-aws-us-east-1-pod-identity-agent").inputs
    assert (agent["addonName"], agent["clusterName"]) == (
        "eks-pod-identity-agent",
        result.named("aideploy-aws-us-east-1-cluster").outputs["name"],
    )
    aks = result.named("aideploy-azure-westeurope-cluster").inputs
    assert aks["oidcIssuerProfile"] == {"enabled": True}
    assert aks["securityProfile"] == {"workloadIdentity": {"enabled": True}}
    pull = result.named("aideploy-azure-westeurope-cluster-registry-access").inputs
    assert pull["roleDefinitionId"].endswith("7f951dda-4ed3-4680-a7ca-43fe172d538d")
    assert pull["scope"] == "aideploy-azure-westeurope-registry-id"
    assert (
        pull["principalId"]
        == (
            result.named("aideploy-azure-westeurope-cluster").outputs["identityProfile"][
                "kubeletidentity"
            ]["objectId"]
        )
    )
    apps = result.named("aideploy-azure-westeurope-apps").inputs
    assert apps["workloadProfiles"] == [
        {"name": "Consumption", "workloadProfileType": "Consumption"}
    ]
    gke = result.named("aideploy-gcp-europe-west4-cluster").inputs
    assert gke["workloadIdentityConfig"] == {"workloadPool": "acme-ml.svc.id.goog"}
    for keda in result.of_type("aideploy:index:Keda"):
        assert keda.parent_name
        assert keda.parent_name.startswith("aideploy-")
    assert set(result.exports) >= {
        "aws-us-east-1-registry_url",
        "aws-us-east-1-cluster_name",
        "gcp-europe-west4-artifacts",
        "gcp-europe-west4-project",
        "gcp-europe-west4-workload_identity_pool",
        "azure-westeurope-kubeconfig",
        "azure-westeurope-oidc_issuer_url",
        "azure-westeurope-storage_account_id",
        "azure-westeurope-resource_group_name",
        "azure-westeurope-registry_id",
        "azure-westeurope-container_apps_environment_id",
    }, "what deployments on the platform (target.cluster) and Container Apps read"
    assert result.exports["gcp-europe-west4-workload_identity_pool"] == "acme-ml.svc.id.goog"
    assert result.exports["azure-westeurope-oidc_issuer_url"].startswith("https://")
    assert "kubeconfig" not in result.exports, (
        "only a single-cloud platform exports the bare kubeconfig"
    )


def test_single_cloud_platform_exports_its_kubeconfig() -> None:
    cfg = PlatformConfig.model_validate({"clouds": [{"cloud": "aws", "region": "eu-west-1"}]})
    result = synthesize(lambda: platform(cfg))
    kubeconfig = result.exports["kubeconfig"]
    assert "aws" in kubeconfig
    assert "get-token" in kubeconfig
    assert result.exports["cluster_name"] == result.exports["aws-eu-west-1-cluster_name"]
    assert DeploymentsConfig.model_fields["deployments"].is_required()


def test_an_http_add_on_without_the_fields_deployments_use_is_refused() -> None:
    cfg = PlatformConfig.model_validate(
        {"clouds": [{"cloud": "aws", "region": "eu-west-1", "http_add_on_chart_version": "0.10.0"}]}
    )
    with pytest.raises(
        InputError, match=r"http_add_on_chart_version: 0\.10\.0 is too old; allowed: 0\.11\.0"
    ):
        synthesize(lambda: platform(cfg))
