"""The rendered Kubernetes objects: valid against the Kubernetes OpenAPI schemas and the KEDA
CRDs (with unknown fields refused, so a typo fails), and shaped the way each policy combination
requires."""

from __future__ import annotations

import itertools
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from aideploy.schema import Cloud
from aideploy.settings import load_settings
from aideploy_iac.args import DeploymentSpec, resolve_spec
from aideploy_iac.kubernetes.manifests import (
    SPOT_NODE_LABELS,
    KubernetesOptions,
    ServiceAccountSpec,
    render_manifests,
    service_url,
)
from aideploy_iac.platform.keda import (
    DEFAULT_HTTP_ADD_ON_CHART_VERSION,
    HTTP_ADD_ON_CRD_COMMIT,
    MIN_HTTP_ADD_ON_CHART_VERSION,
)

KUBERNETES_VERSION = "1.33"
CORE_KINDS = {
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
}
CRD_FILES = {
    ("keda.sh", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("http.keda.sh", "HTTPScaledObject"): "http.keda.sh_httpscaledobjects.yaml",
}


def crd_schema_dir() -> Path:
    """The CRD folder from the settings; a missing setting or file fails, never skips."""
    directory = load_settings().crd_schema_dir
    if directory is None:
        pytest.fail("AIDEPLOY_CRD_SCHEMA_DIR is not set; point it at the KEDA CRD folder")
    missing = [name for name in CRD_FILES.values() if not (directory / name).is_file()]
    if missing:
        pytest.fail(f"KEDA CRD files missing from {directory}: {', '.join(missing)}")
    return directory


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists an object's fields.

    An API server prunes unknown fields of a structural CRD without complaint, so a misspelt
    field would silently do nothing; validating closed objects makes the typo fail here.
    Objects marked ``x-kubernetes-preserve-unknown-fields`` or typed as maps stay open.
    """
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


@cache
def _crd_validator(directory: Path, file_name: str, version: str) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load((directory / file_name).read_text(encoding="utf-8"))
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            schema = _closed(served["schema"]["openAPIV3Schema"])
            validator_class = jsonschema.validators.validator_for(
                schema, default=jsonschema.Draft7Validator
            )
            return validator_class(schema)
    pytest.fail(f"{file_name} serves no version {version}")


def validate(manifest: dict[str, Any]) -> None:
    kind = manifest["kind"]
    if kind in CORE_KINDS:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        return
    group, version = manifest["apiVersion"].split("/")
    validator = _crd_validator(crd_schema_dir(), CRD_FILES[(group, kind)], version)
    errors = sorted(validator.iter_errors(manifest), key=lambda error: list(error.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors)


def spec_of(**args: Any) -> DeploymentSpec:
    base: dict[str, Any] = {"model_uri": "s3://models/m.onnx", "image": "ghcr.io/acme/serve:1"}
    spec, _ = resolve_spec("sentiment", {**base, **args})
    return spec


COMBINATIONS = list(
    itertools.product(
        [False, True],  # use_spot_instances
        [False, True],  # hibernation_enabled
        [0, 2],  # on_demand_base_instances
        [False, True],  # hibernated
        [None, 1],  # gpu
    )
)


@pytest.mark.parametrize(("spot", "hibernation", "base", "hibernated", "gpu"), COMBINATIONS)
def test_every_policy_combination_renders_valid_objects(
    spot: bool, hibernation: bool, base: int, hibernated: bool, gpu: int | None
) -> None:
    spec = spec_of(
        resource_requirements={"cpu": "2", "memory": "4Gi", **({"gpu": gpu} if gpu else {})},
        scaling_policy={"min_instances": 1, "max_instances": 6, "target_cpu_utilization": 60},
        cost_optimization_policy={
            "use_spot_instances": spot,
            "hibernation_enabled": hibernation,
            "hibernation_idle_timeout": 900,
            "on_demand_base_instances": base,
        },
        hibernated=hibernated,
    )
    manifests = render_manifests(spec, KubernetesOptions(namespace="ml"))
    for manifest in manifests.values():
        validate(manifest)
        assert manifest["metadata"]["namespace"] == "ml"
        assert manifest["metadata"]["labels"]["app.kubernetes.io/instance"] == "sentiment"

    assert manifests["service"]["metadata"]["name"] == "sentiment", "the Service is always kept"
    deployment = manifests["deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    environment = {item["name"]: item["value"] for item in container["env"]}
    assert environment["AIDEPLOY_SERVE_MODEL_URI"] == "s3://models/m.onnx"
    assert environment["PORT"] == "8080"

    on_demand = base if spot else 0
    assert ("on-demand-deployment" in manifests) == bool(on_demand)
    keda = hibernation and not hibernated
    assert ("scaled-object" in manifests) == keda
    assert ("http-scaled-object" in manifests) == keda
    assert ("autoscaler" in manifests) == (not hibernation and not hibernated)
    if hibernated:
        assert deployment["spec"]["replicas"] == 0
        if on_demand:
            assert manifests["on-demand-deployment"]["spec"]["replicas"] == 0
    else:
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    if gpu:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
        assert {
            "key": "nvidia.com/gpu",
            "operator": "Exists",
            "effect": "NoSchedule",
        } in tolerations


def test_autoscaler_maps_the_scaling_policy() -> None:
    spec = spec_of(
        scaling_policy={"min_instances": 2, "max_instances": 9, "target_cpu_utilization": 55}
    )
    autoscaler = render_manifests(spec, KubernetesOptions())["autoscaler"]["spec"]
    assert autoscaler["minReplicas"] == 2
    assert autoscaler["maxReplicas"] == 9
    assert autoscaler["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 55,
    }


def test_scale_to_zero_uses_keda_with_the_idle_timeout() -> None:
    spec = spec_of(
        resource_requirements={"cpu": "2", "memory": "4Gi", "timeout": 45},
        scaling_policy={"min_instances": 1, "max_instances": 7, "target_cpu_utilization": 65},
        cost_optimization_policy={"hibernation_enabled": True, "hibernation_idle_timeout": 600},
    )
    manifests = render_manifests(
        spec, KubernetesOptions(namespace="ml", keda_namespace="autoscaling")
    )
    scaled = manifests["scaled-object"]["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"], scaled["cooldownPeriod"]) == (
        0,
        7,
        600,
    )
    push, cpu = scaled["triggers"]
    assert push["metadata"] == {
        "scalerAddress": "keda-add-ons-http-external-scaler.autoscaling:9090",
        "httpScaledObject": "sentiment",
    }
    assert cpu["metadata"] == {"value": "65"}
    http = manifests["http-scaled-object"]
    assert http["metadata"]["annotations"] == {
        "httpscaledobject.keda.sh/skip-scaledobject-creation": "true"
    }
    assert http["spec"]["replicas"] == {"min": 0, "max": 7}
    assert http["spec"]["scaledownPeriod"] == 600
    assert http["spec"]["scaleTargetRef"]["service"] == "sentiment-backend"
    assert http["spec"]["timeouts"] == {"responseHeader": "45s"}
    assert "sentiment.ml.svc.cluster.local" in http["spec"]["hosts"]
    entry = manifests["service"]["spec"]
    assert entry["type"] == "ExternalName"
    assert (
        entry["externalName"] == "keda-add-ons-http-interceptor-proxy.autoscaling.svc.cluster.local"
    )
    assert (
        service_url(spec, KubernetesOptions(namespace="ml"))
        == "http://sentiment.ml.svc.cluster.local:8080"
    )


@pytest.mark.parametrize("cloud", [Cloud.AWS, Cloud.GCP, Cloud.AZURE])
def test_spot_prefers_the_clouds_spot_nodes_and_falls_back(cloud: Cloud) -> None:
    spec = spec_of(
        cost_optimization_policy={"use_spot_instances": True, "on_demand_base_instances": 1}
    )
    manifests = render_manifests(spec, KubernetesOptions(spot_clouds=[cloud]))
    label, value, taint = SPOT_NODE_LABELS[cloud]
    pod = manifests["deployment"]["spec"]["template"]["spec"]
    affinity = pod["affinity"]["nodeAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in affinity, (
        "spot must be a preference"
    )
    [preference] = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preference["preference"]["matchExpressions"] == [
        {"key": label, "operator": "In", "values": [value]}
    ]
    tolerations = pod.get("tolerations", [])
    if taint:
        assert {
            "key": taint,
            "operator": "Equal",
            "value": value,
            "effect": "NoSchedule",
        } in tolerations
    else:
        assert tolerations == []
    floor = manifests["on-demand-deployment"]
    assert floor["spec"]["replicas"] == 1
    required = floor["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert required["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": label, "operator": "NotIn", "values": [value]}
    ]
    assert manifests["autoscaler"]["spec"]["maxReplicas"] == 4, "the floor is part of max_instances"


def test_unknown_cluster_prefers_every_clouds_spot_label() -> None:
    spec = spec_of(cost_optimization_policy={"use_spot_instances": True})
    pod = render_manifests(spec, KubernetesOptions())["deployment"]["spec"]["template"]["spec"]
    preferred = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert {term["preference"]["matchExpressions"][0]["key"] for term in preferred} == {
        label for label, _, _ in SPOT_NODE_LABELS.values()
    }


@pytest.mark.parametrize("cloud", [Cloud.AWS, Cloud.GCP, Cloud.AZURE])
def test_identity_and_option_variants_render_valid_objects(cloud: Cloud) -> None:
    """A single cloud's spot labels, a created service account with its identity annotation and
    pod label, a custom namespace for KEDA: all still valid."""
    spec = spec_of(
        model_uri="az://models/m.onnx",
        cost_optimization_policy={
            "use_spot_instances": True,
            "on_demand_base_instances": 1,
            "hibernation_enabled": True,
        },
    )
    options = KubernetesOptions(
        namespace="ml",
        spot_clouds=[cloud],
        keda_namespace="autoscaling",
        service_account=ServiceAccountSpec(
            "sentiment",
            {"azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000000"},
        ),
        pod_labels={"azure.workload.identity/use": "true"},
        storage_account_id="/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acme",
    )
    manifests = render_manifests(spec, options)
    assert next(iter(manifests)) == "service-account", "created before the pods that use it"
    for manifest in manifests.values():
        validate(manifest)
    pod = manifests["deployment"]["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "sentiment"
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    environment = {item["name"]: item["value"] for item in pod["spec"]["containers"][0]["env"]}
    assert environment["AIDEPLOY_SERVE_MODEL_URI"] == "az://models/m.onnx"
    assert environment["AZURE_STORAGE_ACCOUNT_NAME"] == "acme"
    push = manifests["scaled-object"]["spec"]["triggers"][0]["metadata"]
    assert push["scalerAddress"] == "keda-add-ons-http-external-scaler.autoscaling:9090"


async def test_the_usage_token_is_a_secret_the_pods_reference() -> None:
    """(Async: the token is a Pulumi secret Output, which needs an event loop.)"""
    spec = spec_of(usage_url="https://api.example.com/deployments/d/usage", usage_token="dpl_x")
    manifests = render_manifests(spec, KubernetesOptions())
    assert list(manifests)[:2] == ["usage-token", "service"]
    secret = manifests["usage-token"]
    assert (secret["kind"], secret["type"], secret["metadata"]["name"]) == (
        "Secret",
        "Opaque",
        "sentiment-usage",
    )
    environment = manifests["deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {item["name"]: item for item in environment}
    assert by_name["AIDEPLOY_SERVE_USAGE_TOKEN"] == {
        "name": "AIDEPLOY_SERVE_USAGE_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "sentiment-usage", "key": "token"}},
    }
    assert (
        by_name["AIDEPLOY_SERVE_USAGE_URL"]["value"]
        == "https://api.example.com/deployments/d/usage"
    )


def test_the_http_add_on_chart_ships_the_crd_the_objects_are_validated_against() -> None:
    """The platform installs the chart whose HTTPScaledObject CRD is the one in SOURCES.md, and
    no older than the first version with the fields the objects use."""
    sources = (crd_schema_dir() / "SOURCES.md").read_text(encoding="utf-8")
    [row] = [line for line in sources.splitlines() if "http.keda.sh_httpscaledobjects.yaml" in line]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "kedacore/http-add-on"
    assert cells[3].split()[0] == HTTP_ADD_ON_CRD_COMMIT, (
        "the CRD changed: check which keda-add-ons-http chart ships it and update "
        "DEFAULT_HTTP_ADD_ON_CHART_VERSION and HTTP_ADD_ON_CRD_COMMIT together"
    )
    version = tuple(int(part) for part in DEFAULT_HTTP_ADD_ON_CHART_VERSION.split("."))
    assert version >= MIN_HTTP_ADD_ON_CHART_VERSION
    manifests = render_manifests(
        spec_of(cost_optimization_policy={"hibernation_enabled": True}), KubernetesOptions()
    )
    assert "timeouts" in manifests["http-scaled-object"]["spec"], "why 0.11.0 is the minimum"


@pytest.mark.parametrize(
    ("role", "path", "typo"),
    [
        ("scaled-object", ("spec",), "cooldownPeriodd"),
        ("scaled-object", ("spec", "advanced"), "horizontalPodAutoscalerConfigg"),
        ("http-scaled-object", ("spec",), "scaleDownPeriod"),
        ("http-scaled-object", ("spec", "scaleTargetRef"), "servce"),
    ],
)
def test_a_misspelt_crd_field_fails_validation(role: str, path: tuple[str, ...], typo: str) -> None:
    """The API server would prune the typo silently; the closed schema refuses it."""
    manifests = render_manifests(
        spec_of(cost_optimization_policy={"hibernation_enabled": True}), KubernetesOptions()
    )
    manifest = manifests[role]
    validate(manifest)
    node = manifest
    for key in path:
        node = node[key]
    node[typo] = 1
    with pytest.raises(AssertionError, match=typo):
        validate(manifest)


def test_a_broken_manifest_fails_validation() -> None:
    """The validators are live: a wrong field type is caught for core kinds and CRDs alike."""
    manifests = render_manifests(
        spec_of(cost_optimization_policy={"hibernation_enabled": True}), KubernetesOptions()
    )
    manifests["deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"][0][
        "containerPort"
    ] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(manifests["deployment"])
    manifests["scaled-object"]["spec"]["minReplicaCount"] = "zero"
    with pytest.raises(AssertionError, match="minReplicaCount"):
        validate(manifests["scaled-object"])
