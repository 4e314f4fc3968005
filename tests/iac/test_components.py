"""ModelDeployment under the mock engine: the child contract (types, names, parents, mapped
inputs) for every target and policy combination, warnings, and construction-time errors."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from aideploy.errors import AideployError, InputError, NotSupportedError
from aideploy.schema import DeploymentType
from aideploy_iac.args import resolve_spec
from aideploy_iac.kubernetes.manifests import KubernetesOptions, render_manifests
from aideploy_iac.placement import choose_placement
from aideploy_iac.pricing import load_catalog
from aideploy_iac.synth import SynthResult
from tests.iac.conftest import IMAGE, MODEL_URIS, Synth, deployment_args

TARGETS = {
    # cloud (None: Kubernetes) -> (child role, child component type)
    None: ("kubernetes", "aideploy:index:KubernetesModelDeployment"),
    "aws": ("lambda", "aideploy:index:LambdaModelDeployment"),
    "gcp": ("cloud-run", "aideploy:index:CloudRunModelDeployment"),
    "azure": ("container-app", "aideploy:index:ContainerAppModelDeployment"),
}
POLICIES = list(
    itertools.product(
        [False, True],  # use_spot_instances
        [False, True],  # hibernation_enabled
        [False, True],  # hibernated
        [0, 2],  # min_instances
    )
)
SPOT_WARNING = "cost_optimization_policy.use_spot_instances"


def _policy_args(
    cloud: str | None, spot: bool, hibernation: bool, hibernated: bool, min_instances: int
) -> dict[str, Any]:
    return deployment_args(
        cloud,
        resource_requirements={"cpu": "1", "memory": "2Gi", "timeout": 60},
        scaling_policy={
            "min_instances": min_instances,
            "max_instances": 6,
            "target_cpu_utilization": 60,
        },
        cost_optimization_policy={
            "use_spot_instances": spot,
            "hibernation_enabled": hibernation,
            "hibernation_idle_timeout": 900,
        },
        hibernated=hibernated,
        metadata={"team": "nlp"},
    )


def _outputs(result: SynthResult) -> dict[str, Any]:
    return result.named("sentiment").outputs


def _assert_child_contract(result: SynthResult, cloud: str | None) -> str:
    role, component_type = TARGETS[cloud]
    top = result.named("sentiment")
    assert (top.type, top.parent_name) == ("aideploy:index:ModelDeployment", None)
    child_name = f"sentiment-{role}"
    child = result.named(child_name)
    assert (child.type, child.parent_name) == (component_type, "sentiment")
    for resource in result.children_of(child_name):
        assert resource.name.startswith(f"{child_name}-"), resource.name
    assert {r.name for r in result.resources} == {"sentiment", child_name} | {
        r.name for r in result.children_of(child_name)
    }, "every resource belongs to the deployment's tree"
    return child_name


@pytest.mark.parametrize(("spot", "hibernation", "hibernated", "min_instances"), POLICIES)
def test_kubernetes_target(
    synth_deployment: Synth, spot: bool, hibernation: bool, hibernated: bool, min_instances: int
) -> None:
    args = _policy_args(None, spot, hibernation, hibernated, min_instances)
    result = synth_deployment(args)
    child = _assert_child_contract(result, None)
    spec, _ = resolve_spec("sentiment", args)  # type: ignore[arg-type]
    expected = render_manifests(spec, KubernetesOptions())
    children = {r.name.removeprefix(f"{child}-"): r for r in result.children_of(child)}
    assert set(children) == set(expected)
    for role, manifest in expected.items():
        resource = children[role]
        assert resource.inputs["kind"] == manifest["kind"]
        assert resource.inputs["metadata"] == manifest["metadata"]
        assert resource.inputs["spec"] == manifest["spec"], f"{role} is passed to Pulumi unchanged"
    outputs = _outputs(result)
    assert outputs["target_kind"] == "kubernetes"
    assert outputs["effective_use_spot_instances"] is spot
    assert outputs["effective_hibernation_enabled"] is hibernation
    assert outputs["effective_target_cpu_utilization"] == 60
    assert outputs["hibernated"] is hibernated
    assert not any(SPOT_WARNING in warning for warning in outputs["warnings"])
    assert outputs["endpoint_url"] == f"http://sentiment.default.svc.cluster.local:{8080}"


@pytest.mark.parametrize(("spot", "hibernation", "hibernated", "min_instances"), POLICIES)
def test_lambda_target(
    synth_deployment: Synth, spot: bool, hibernation: bool, hibernated: bool, min_instances: int
) -> None:
    result = synth_deployment(_policy_args("aws", spot, hibernation, hibernated, min_instances))
    child = _assert_child_contract(result, "aws")
    function = result.named(f"{child}-function")
    assert function.type == "aws:lambda/function:Function"
    assert function.inputs["packageType"] == "Image"
    assert function.inputs["memorySize"] == 2048
    assert function.inputs["timeout"] == 60
    assert function.inputs["reservedConcurrentExecutions"] == (0 if hibernated else 6)
    assert (
        function.inputs["environment"]["variables"]["AIDEPLOY_SERVE_MODEL_URI"] == MODEL_URIS["aws"]
    )
    assert function.inputs["tags"]["team"] == "nlp"
    warm = 0 if hibernation or hibernated else min_instances
    provisioned = result.of_type(
        "aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig"
    )
    assert [p.inputs["provisionedConcurrentExecutions"] for p in provisioned] == (
        [warm] if warm else []
    )
    assert result.named(f"{child}-url").inputs["authorizationType"] == "AWS_IAM"
    policy = json.loads(result.named(f"{child}-model-access").inputs["policy"])
    assert policy["Statement"][0]["Resource"] == ["arn:aws:s3:::acme-models/sentiment/model.onnx"]
    assert result.named(f"{child}-logs").inputs["retentionInDays"] == 14
    outputs = _outputs(result)
    assert outputs["effective_use_spot_instances"] is False
    assert "effective_target_cpu_utilization" not in outputs, "Lambda has no CPU target"
    assert outputs["effective_min_instances"] == (0 if hibernation else min_instances)
    warnings = outputs["warnings"]
    assert any(SPOT_WARNING in w for w in warnings) is spot
    assert any("scaling_policy.target_cpu_utilization" in w for w in warnings)
    assert any("hibernation_idle_timeout" in w for w in warnings) is hibernation
    assert outputs["endpoint_url"].startswith("https://")


@pytest.mark.parametrize(("spot", "hibernation", "hibernated", "min_instances"), POLICIES)
def test_cloud_run_target(
    synth_deployment: Synth, spot: bool, hibernation: bool, hibernated: bool, min_instances: int
) -> None:
    result = synth_deployment(_policy_args("gcp", spot, hibernation, hibernated, min_instances))
    child = _assert_child_contract(result, "gcp")
    service = result.named(f"{child}-service")
    template = service.inputs["template"]
    assert template["scaling"] == {
        "minInstanceCount": 0 if hibernation else min_instances,
        "maxInstanceCount": 6,
    }
    assert service.inputs["scaling"]["scalingMode"] == ("MANUAL" if hibernated else "AUTOMATIC")
    if hibernated:
        assert service.inputs["scaling"]["manualInstanceCount"] == 0
    assert template["timeout"] == "60s"
    [container] = template["containers"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert "PORT" not in {env["name"] for env in container["envs"]}, "Cloud Run reserves PORT"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    access = result.named(f"{child}-model-access")
    assert access.inputs["bucket"] == "acme-models"
    assert "objects/sentiment/model.onnx" in access.inputs["condition"]["expression"]
    assert not result.of_type("gcp:cloudrunv2/serviceIamMember:ServiceIamMember"), (
        "private by default"
    )
    warnings = _outputs(result)["warnings"]
    assert any(SPOT_WARNING in w for w in warnings) is spot
    assert any("target_cpu_utilization" in w for w in warnings)


@pytest.mark.parametrize(("spot", "hibernation", "hibernated", "min_instances"), POLICIES)
def test_container_apps_target(
    synth_deployment: Synth, spot: bool, hibernation: bool, hibernated: bool, min_instances: int
) -> None:
    result = synth_deployment(_policy_args("azure", spot, hibernation, hibernated, min_instances))
    child = _assert_child_contract(result, "azure")
    app = result.named(f"{child}-app")
    scale = app.inputs["template"]["scale"]
    assert scale["minReplicas"] == (0 if hibernation or hibernated else min_instances)
    assert scale["maxReplicas"] == 6
    assert scale["cooldownPeriod"] == (900 if hibernation else 300)
    assert [rule["name"] for rule in scale["rules"]] == ["http-requests", "cpu-utilization"]
    assert scale["rules"][1]["custom"]["metadata"]["value"] == "60"
    [container] = app.inputs["template"]["containers"]
    assert container["resources"] == {"cpu": 1.0, "memory": "2Gi"}
    assert app.inputs["configuration"]["ingress"]["external"] is False
    assert {r.type for r in result.children_of(child)} >= {
        "azure-native:resources:ResourceGroup",
        "azure-native:app:ManagedEnvironment",
        "azure-native:managedidentity:UserAssignedIdentity",
    }
    warnings = _outputs(result)["warnings"]
    assert any(SPOT_WARNING in w for w in warnings) is spot
    assert any("model_storage_account_id" in w for w in warnings), "no read access is reported"
    assert _outputs(result)["effective_target_cpu_utilization"] == 60


def test_public_endpoints(synth_deployment: Synth) -> None:
    aws = synth_deployment(deployment_args("aws", public_endpoint=True))
    assert aws.named("sentiment-lambda-url").inputs["authorizationType"] == "NONE"
    assert aws.named("sentiment-lambda-public-url").inputs["principal"] == "*"
    gcp = synth_deployment(deployment_args("gcp", public_endpoint=True))
    assert gcp.named("sentiment-cloud-run-public-invoker").inputs["member"] == "allUsers"
    azure = synth_deployment(deployment_args("azure", public_endpoint=True))
    assert (
        azure.named("sentiment-container-app-app").inputs["configuration"]["ingress"]["external"]
        is True
    )


def test_container_apps_reads_the_model_with_a_role_assignment(synth_deployment: Synth) -> None:
    account = (
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acmemodels"
    )
    result = synth_deployment(deployment_args("azure", model_storage_account_id=account))
    assignment = result.named("sentiment-container-app-model-access")
    assert assignment.inputs["scope"] == f"{account}/blobServices/default/containers/models"
    assert assignment.inputs["roleDefinitionId"].endswith("2a2b9908-6ea1-4ae2-8e65-a410df84e7d1")
    assert not any("model_storage_account_id" in w for w in _outputs(result)["warnings"])


def test_kubernetes_on_a_known_cloud_prefers_only_its_spot_nodes(synth_deployment: Synth) -> None:
    args = deployment_args(
        None,
        target={"cloud": "gcp", "cluster": "gke-prod"},
        cost_optimization_policy={"use_spot_instances": True},
    )
    result = synth_deployment(args)
    provider = result.named("sentiment-cluster")
    assert (provider.type, provider.inputs["context"]) == (
        "pulumi:providers:kubernetes",
        "gke-prod",
    )
    pod = result.named("sentiment-kubernetes-deployment").inputs["spec"]["template"]["spec"]
    [preference] = pod["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert preference["preference"]["matchExpressions"][0]["key"] == "cloud.google.com/gke-spot"


def test_multi_cloud_placement_picks_the_cheapest_place(synth_deployment: Synth) -> None:
    args = {
        "model_uri": MODEL_URIS["gcp"],
        "image": IMAGE,
        "deployment_type": "serverless",
        "cost_optimization_policy": {"multi_cloud_enabled": True, "hibernation_enabled": True},
    }
    result = synth_deployment(args)
    spec, _ = resolve_spec("sentiment", args)  # type: ignore[arg-type]
    decision = choose_placement(load_catalog(), spec, DeploymentType.SERVERLESS)
    outputs = _outputs(result)
    assert outputs["effective_multi_cloud_enabled"] is True
    assert outputs["placement_choice"] == decision.choice.place
    assert outputs["placement_estimated_monthly_cost"] == decision.choice.total
    assert decision.runner_up is not None
    assert outputs["placement_runner_up"] == decision.runner_up.place
    assert outputs["placement_runner_up_estimated_monthly_cost"] == decision.runner_up.total
    assert decision.choice.total <= decision.runner_up.total
    assert outputs["cloud"] == "gcp", "a gs:// model can only be granted to Cloud Run"
    assert result.named("sentiment-cloud-run").parent_name == "sentiment"


def test_explicit_target_with_multi_cloud_warns(synth_deployment: Synth) -> None:
    result = synth_deployment(
        deployment_args("gcp", cost_optimization_policy={"multi_cloud_enabled": True})
    )
    assert any("multi_cloud_enabled: ignored" in w for w in _outputs(result)["warnings"])
    assert _outputs(result)["effective_multi_cloud_enabled"] is False


def test_arguments_of_another_target_warn(synth_deployment: Synth) -> None:
    result = synth_deployment(deployment_args("gcp", namespace="ml", log_retention_days=30))
    warnings = _outputs(result)["warnings"]
    assert any(w.startswith("namespace: applies only to kubernetes") for w in warnings)
    assert any(w.startswith("log_retention_days: applies only to aws-lambda") for w in warnings)


def test_unusable_metadata_is_reported_not_dropped(synth_deployment: Synth) -> None:
    result = synth_deployment(
        deployment_args(None, metadata={"team": "nlp", "owner": {"id": 1}, "bad key!": "x"})
    )
    warnings = _outputs(result)["warnings"]
    assert any(w.startswith("metadata.owner:") for w in warnings)
    assert any(w.startswith("metadata.bad key!:") for w in warnings)
    labels = result.named("sentiment-kubernetes-deployment").inputs["metadata"]["labels"]
    assert labels["team"] == "nlp"


INVALID = [
    (
        deployment_args("aws", resource_requirements={"gpu": 1}),
        InputError,
        r"resource_requirements\.gpu: .*allowed: null",
    ),
    (
        deployment_args("aws", resource_requirements={"memory": "64Mi"}),
        InputError,
        r"resource_requirements\.memory: .*allowed: .*128Mi to 10240Mi",
    ),
    (
        deployment_args("aws", resource_requirements={"timeout": 901}),
        InputError,
        r"resource_requirements\.timeout: .*allowed: 1-900",
    ),
    (deployment_args("aws", image=IMAGE), InputError, r"image: .*Amazon ECR"),
    (
        deployment_args("aws", model_uri=MODEL_URIS["gcp"]),
        InputError,
        r"model_uri: .*s3://<bucket>/<object>",
    ),
    (
        deployment_args("aws", log_retention_days=10),
        InputError,
        r"log_retention_days: 10 is not allowed; allowed: 1, 3",
    ),
    (
        deployment_args("gcp", resource_requirements={"cpu": "3"}),
        InputError,
        r"resource_requirements\.cpu: '3' .*allowed: 1, 2, 4, 6, 8",
    ),
    (
        deployment_args("gcp", resource_requirements={"cpu": "1", "memory": "16Gi"}),
        InputError,
        r"resource_requirements\.memory: .*allowed: 128Mi to 4Gi",
    ),
    (
        deployment_args("gcp", resource_requirements={"gpu": 1}),
        InputError,
        r"resource_requirements\.gpu",
    ),
    (
        deployment_args("azure", resource_requirements={"cpu": "1", "memory": "3Gi"}),
        InputError,
        r"resource_requirements: .*allowed cpu/memory pairs: 0\.25/512Mi",
    ),
    (
        deployment_args("azure", resource_requirements={"timeout": 300}),
        InputError,
        r"resource_requirements\.timeout: .*allowed: 1-240",
    ),
    (
        deployment_args("azure", deployment_name="a-very-long-deployment-name-for-azure-apps"),
        InputError,
        r"deployment_name: .*2-32",
    ),
    (
        {**deployment_args(None), "deployment_type": "serverless"},
        InputError,
        r"target\.cloud: none .*allowed: aws, gcp, azure",
    ),
    (
        deployment_args(None, deployment_type="edge"),
        InputError,
        r"deployment_type: 'edge' is not one of kubernetes, serverless",
    ),
    (
        deployment_args(None, target={"cloud": "local"}),
        NotSupportedError,
        r"target\.cloud: 'local'",
    ),
    (
        deployment_args("gcp", target={"cloud": "gcp", "cluster": "prod"}),
        InputError,
        r"target\.cluster: applies only",
    ),
    (
        deployment_args(None, target={"cloud": "mars"}),
        InputError,
        r"target\.cloud: Input should be 'aws', 'gcp', 'azure' or 'local'",
    ),
    (
        deployment_args(
            None,
            cost_optimization_policy={"use_spot_instances": True, "on_demand_base_instances": 9},
        ),
        InputError,
        r"on_demand_base_instances: 9 must be <= scaling_policy\.max_instances \(5\)",
    ),
    (
        deployment_args(None, scaling_policy={"min": 1}),
        InputError,
        r"scaling_policy\.min: Extra inputs are not permitted",
    ),
    (
        deployment_args(None, resource_requirements={"cpu": "lots"}),
        InputError,
        r"resource_requirements\.cpu: 'lots' is not a Kubernetes quantity",
    ),
    (
        deployment_args(None, deployment_name="Not_A_Label"),
        InputError,
        r"deployment_name: must be 1-63 lowercase",
    ),
    (
        deployment_args(None, model_format="keras"),
        InputError,
        r"model_format: 'keras' is not one of onnx, pytorch",
    ),
    ({"image": IMAGE}, InputError, r"model_uri: required"),
]


@pytest.mark.parametrize(("args", "error", "message"), INVALID)
def test_invalid_combinations_fail_at_construction(
    synth_deployment: Synth, args: dict[str, Any], error: type[AideployError], message: str
) -> None:
    with pytest.raises(error, match=message):
        synth_deployment(args)


def test_serverless_gpu_cannot_be_placed(synth_deployment: Synth) -> None:
    args = {
        "model_uri": MODEL_URIS["gcp"],
        "image": IMAGE,
        "deployment_type": "serverless",
        "resource_requirements": {"gpu": 1},
        "cost_optimization_policy": {"multi_cloud_enabled": True},
    }
    with pytest.raises(InputError, match=r"multi_cloud_enabled: no catalogued cloud can run"):
        synth_deployment(args)
