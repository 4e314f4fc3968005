"""ModelDeployment under the mock engine: the child contract (types, names, parents, mapped
inputs) for every target and policy combination, warnings, and construction-time errors."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pulumi
import pytest

from aideploy.errors import AideployError, InputError
from aideploy_iac.args import resolve_spec
from aideploy_iac.deployment import ModelDeployment
from aideploy_iac.kubernetes.manifests import KubernetesOptions, render_manifests
from aideploy_iac.policies import replica_split
from aideploy_iac.synth import SynthResult, synthesize
from tests.iac.conftest import (
    ECR_IMAGE,
    IMAGE,
    MODEL_URIS,
    PLATFORM_OUTPUTS,
    PLATFORM_STACK,
    STORAGE_ACCOUNT_ID,
    Synth,
    deployment_args,
)

KUBERNETES = "aideploy:index:KubernetesModelDeployment"
TARGETS = {
    # cloud (None: Kubernetes) -> (child role, child component type)
    None: ("kubernetes", KUBERNETES),
    "aws": ("lambda", "aideploy:index:LambdaModelDeployment"),
    "gcp": ("cloud-run", "aideploy:index:CloudRunModelDeployment"),
    "azure": ("container-app", "aideploy:index:ContainerAppModelDeployment"),
}
SERVICE = "kubernetes:core/v1:Service"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
PERMISSION = "aws:lambda/permission:Permission"
INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
# The resource type of every child role per target (numbered roles written with N).
CHILD_TYPES: dict[str | None, dict[str, str]] = {
    None: {
        "service": SERVICE,
        "backend-service": SERVICE,
        "deployment": DEPLOYMENT,
        "on-demand-deployment": DEPLOYMENT,
        "autoscaler": "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
        "http-scaled-object": "kubernetes:http.keda.sh/v1alpha1:HTTPScaledObject",
        "scaled-object": "kubernetes:keda.sh/v1alpha1:ScaledObject",
        "disruption-budget": "kubernetes:policy/v1:PodDisruptionBudget",
        "service-account": "kubernetes:core/v1:ServiceAccount",
        "usage-token": "kubernetes:core/v1:Secret",
    },
    "aws": {
        "logs": "aws:cloudwatch/logGroup:LogGroup",
        "role": "aws:iam/role:Role",
        "model-access": "aws:iam/rolePolicy:RolePolicy",
        "function": "aws:lambda/function:Function",
        "alias": "aws:lambda/alias:Alias",
        "provisioned-concurrency": (
            "aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig"
        ),
        "url": "aws:lambda/functionUrl:FunctionUrl",
        "public-url": PERMISSION,
        "public-invoke": PERMISSION,
        "invoker-N-url": PERMISSION,
        "invoker-N-invoke": PERMISSION,
    },
    "gcp": {
        "identity": "gcp:serviceaccount/account:Account",
        "model-access": "gcp:storage/bucketIAMMember:BucketIAMMember",
        "service": "gcp:cloudrunv2/service:Service",
        "public-invoker": INVOKER,
        "invoker-N": INVOKER,
    },
    "azure": {
        "group": "azure-native:resources:ResourceGroup",
        "environment": "azure-native:app:ManagedEnvironment",
        "identity": "azure-native:managedidentity:UserAssignedIdentity",
        "model-access": ROLE_ASSIGNMENT,
        "registry-access": ROLE_ASSIGNMENT,
        "app": "azure-native:app:ContainerApp",
    },
}
# Pod identities on a platform cluster, per cloud.
POD_IDENTITY_TYPES = {
    "aws": {
        "pod-role": "aws:iam/role:Role",
        "pod-model-access": "aws:iam/rolePolicy:RolePolicy",
        "pod-identity": "aws:eks/podIdentityAssociation:PodIdentityAssociation",
    },
    "gcp": {
        "pod-identity": "gcp:serviceaccount/account:Account",
        "pod-model-access": "gcp:storage/bucketIAMMember:BucketIAMMember",
        "pod-workload-identity": "gcp:serviceaccount/iAMMember:IAMMember",
    },
    "azure": {
        "pod-identity": "azure-native:managedidentity:UserAssignedIdentity",
        "pod-federation": "azure-native:managedidentity:FederatedIdentityCredential",
        "pod-model-access": ROLE_ASSIGNMENT,
    },
}
# What ModelDeployment itself may hold besides its target's component.
TOP_TYPES = {
    "platform": "pulumi:pulumi:StackReference",
    "cluster": "pulumi:providers:kubernetes",
}
SWITCHES = [False, True]
KUBERNETES_POLICIES = list(
    itertools.product(
        SWITCHES,  # use_spot_instances
        SWITCHES,  # hibernation_enabled
        SWITCHES,  # hibernated
        [0, 2],  # min_instances
        [0, 1],  # on_demand_base_instances
        [None, 1],  # gpu
    )
)
SERVERLESS_POLICIES = list(
    itertools.product(SWITCHES, SWITCHES, SWITCHES, [0, 2], [0, 1])  # serverless has no GPUs
)
SPOT_WARNING = "cost_optimization_policy.use_spot_instances"
BASE_WARNING = "cost_optimization_policy.on_demand_base_instances: ignored"


def _policy_args(
    cloud: str | None,
    spot: bool,
    hibernation: bool,
    hibernated: bool,
    min_instances: int,
    base: int,
    gpu: int | None = None,
) -> dict[str, Any]:
    resources: dict[str, Any] = {"cpu": "1", "memory": "2Gi", "timeout": 60}
    if gpu:
        resources["gpu"] = gpu
    return deployment_args(
        cloud,
        resource_requirements=resources,
        scaling_policy={
            "min_instances": min_instances,
            "max_instances": 6,
            "target_cpu_utilization": 60,
        },
        cost_optimization_policy={
            "use_spot_instances": spot,
            "hibernation_enabled": hibernation,
            "hibernation_idle_timeout": 900,
            "on_demand_base_instances": base,
        },
        hibernated=hibernated,
        metadata={"team": "nlp"},
    )


SECRET_SIGNATURE = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")


def _revealed(value: Any) -> tuple[Any, bool]:
    """The value with Pulumi's secret wrappers removed, and whether it held a secret."""
    if isinstance(value, dict):
        if value.get(SECRET_SIGNATURE[0]) == SECRET_SIGNATURE[1]:
            return _revealed(value["value"])[0], True
        items = {key: _revealed(item) for key, item in value.items()}
        return {key: item for key, (item, _) in items.items()}, any(
            secret for _, secret in items.values()
        )
    if isinstance(value, list):
        pairs = [_revealed(item) for item in value]
        return [item for item, _ in pairs], any(secret for _, secret in pairs)
    return value, False


def _outputs(result: SynthResult) -> dict[str, Any]:
    return result.named("sentiment").outputs


def _role_of(name: str, prefix: str) -> str:
    return re.sub(r"-\d+(?=-|$)", "-N", name.removeprefix(f"{prefix}-"))


def _assert_child_contract(
    result: SynthResult, cloud: str | None, extra: dict[str, str] | None = None
) -> str:
    """Every resource of the tree: the expected type for its role, named after its parent and
    parented to it."""
    role, component_type = TARGETS[cloud]
    top = result.named("sentiment")
    assert (top.type, top.parent_name) == ("aideploy:index:ModelDeployment", None)
    child_name = f"sentiment-{role}"
    child = result.named(child_name)
    assert (child.type, child.parent_name) == (component_type, "sentiment")
    types = {**CHILD_TYPES[cloud], **(extra or {})}
    for resource in result.resources:
        if resource.name in ("sentiment", child_name):
            continue
        if resource.parent_name == "sentiment":
            assert resource.type == TOP_TYPES[_role_of(resource.name, "sentiment")], resource.name
        else:
            assert resource.parent_name == child_name, f"{resource.name} is outside the tree"
            assert resource.name.startswith(f"{child_name}-"), resource.name
            assert resource.type == types[_role_of(resource.name, child_name)], resource.name
    return child_name


@pytest.mark.parametrize(
    ("spot", "hibernation", "hibernated", "min_instances", "base", "gpu"), KUBERNETES_POLICIES
)
def test_kubernetes_target(
    synth_deployment: Synth,
    spot: bool,
    hibernation: bool,
    hibernated: bool,
    min_instances: int,
    base: int,
    gpu: int | None,
) -> None:
    args = _policy_args(None, spot, hibernation, hibernated, min_instances, base, gpu)
    result = synth_deployment(args)
    child = _assert_child_contract(result, None)
    spec, _ = resolve_spec("sentiment", args)
    expected = render_manifests(spec, KubernetesOptions())
    children = {r.name.removeprefix(f"{child}-"): r for r in result.children_of(child)}
    assert set(children) == set(expected)
    for role, manifest in expected.items():
        resource = children[role]
        assert resource.inputs["kind"] == manifest["kind"]
        assert resource.inputs["metadata"] == manifest["metadata"]
        assert resource.inputs["spec"] == manifest["spec"], f"{role} is passed to Pulumi unchanged"
    assert ("on-demand-deployment" in children) == bool(spot and base)
    pod = children["deployment"].inputs["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits.get("nvidia.com/gpu") == gpu
    outputs = _outputs(result)
    split = replica_split(spec.scaling, spec.cost)
    assert outputs["target_kind"] == "kubernetes"
    assert outputs["effective_use_spot_instances"] is spot
    assert outputs["effective_on_demand_base_instances"] == (base if spot else 0)
    assert outputs["effective_min_instances"] == split.total_min
    assert outputs.get("effective_gpu") == gpu
    assert outputs["effective_hibernation_enabled"] is hibernation
    assert outputs["effective_target_cpu_utilization"] == 60
    assert outputs["hibernated"] is hibernated
    warnings = outputs["warnings"]
    assert not any(SPOT_WARNING in warning for warning in warnings)
    assert any(BASE_WARNING in warning for warning in warnings) is bool(base and not spot)
    assert outputs["endpoint_url"] == f"http://sentiment.default.svc.cluster.local:{8080}"


@pytest.mark.parametrize(
    ("spot", "hibernation", "hibernated", "min_instances", "base"), SERVERLESS_POLICIES
)
def test_lambda_target(
    synth_deployment: Synth,
    spot: bool,
    hibernation: bool,
    hibernated: bool,
    min_instances: int,
    base: int,
) -> None:
    result = synth_deployment(
        _policy_args("aws", spot, hibernation, hibernated, min_instances, base)
    )
    child = _assert_child_contract(result, "aws")
    function = result.named(f"{child}-function")
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
    assert not result.of_type(PERMISSION), "private by default"
    policy = json.loads(result.named(f"{child}-model-access").inputs["policy"])
    assert policy["Statement"][0]["Resource"] == ["arn:aws:s3:::acme-models/sentiment/model.onnx"]
    assert result.named(f"{child}-logs").inputs["retentionInDays"] == 14
    outputs = _outputs(result)
    assert outputs["effective_use_spot_instances"] is False
    assert outputs["effective_on_demand_base_instances"] == 0
    assert "effective_target_cpu_utilization" not in outputs, "Lambda has no CPU target"
    assert outputs["effective_min_instances"] == (0 if hibernation else min_instances)
    assert outputs["region"] == "us-east-1", "the provider's region (the mock's us-east-1)"
    warnings = outputs["warnings"]
    assert any(SPOT_WARNING in w for w in warnings) is spot
    assert any(BASE_WARNING in w for w in warnings) is bool(base)
    assert any("scaling_policy.target_cpu_utilization" in w for w in warnings)
    assert any("hibernation_idle_timeout" in w for w in warnings) is hibernation
    assert outputs["endpoint_url"].startswith("https://")


@pytest.mark.parametrize(
    ("spot", "hibernation", "hibernated", "min_instances", "base"), SERVERLESS_POLICIES
)
def test_cloud_run_target(
    synth_deployment: Synth,
    spot: bool,
    hibernation: bool,
    hibernated: bool,
    min_instances: int,
    base: int,
) -> None:
    result = synth_deployment(
        _policy_args("gcp", spot, hibernation, hibernated, min_instances, base)
    )
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
    assert not result.of_type(INVOKER), "private by default"
    outputs = _outputs(result)
    assert outputs["region"] == "us-central1"
    warnings = outputs["warnings"]
    assert any(SPOT_WARNING in w for w in warnings) is spot
    assert any(BASE_WARNING in w for w in warnings) is bool(base)
    assert any("target_cpu_utilization" in w for w in warnings)
    assert "target.region: not given; Cloud Run runs it in us-central1" in warnings


@pytest.mark.parametrize(
    ("spot", "hibernation", "hibernated", "min_instances", "base"), SERVERLESS_POLICIES
)
def test_container_apps_target(
    synth_deployment: Synth,
    spot: bool,
    hibernation: bool,
    hibernated: bool,
    min_instances: int,
    base: int,
) -> None:
    result = synth_deployment(
        _policy_args("azure", spot, hibernation, hibernated, min_instances, base)
    )
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
    environment = result.named(f"{child}-environment").inputs
    assert environment["workloadProfiles"] == [
        {"name": "Consumption", "workloadProfileType": "Consumption"}
    ]
    outputs = _outputs(result)
    assert outputs["region"] == "eastus"
    warnings = outputs["warnings"]
    assert any(SPOT_WARNING in w for w in warnings) is spot
    assert any(BASE_WARNING in w for w in warnings) is bool(base)
    assert any("model_storage_account_id" in w for w in warnings), "no read access is reported"
    assert outputs["effective_target_cpu_utilization"] == 60


def test_a_provider_in_the_users_opts_reaches_every_child() -> None:
    """Kubernetes objects and cloud resources use the provider the caller passed, not the
    default one; the cloud provider is not handed to the Kubernetes objects and vice versa."""
    import pulumi_aws as aws
    import pulumi_kubernetes as k8s

    def program() -> None:
        cluster = k8s.Provider("user-cluster", context="staging")
        account = aws.Provider("user-aws", region="eu-west-1")
        options = pulumi.ResourceOptions(providers=[cluster, account])
        ModelDeployment("on-k8s", deployment_args(None), options)  # type: ignore[arg-type]
        lambda_args = deployment_args("aws", image=ECR_IMAGE.replace("us-east-1", "eu-west-1"))
        ModelDeployment("on-lambda", lambda_args, options)  # type: ignore[arg-type]

    result = synthesize(program)
    kubernetes_objects = [r for r in result.children_of("on-k8s-kubernetes") if r.custom]
    cloud_resources = [r for r in result.children_of("on-lambda-lambda") if r.custom]
    assert kubernetes_objects
    assert cloud_resources
    for resource in kubernetes_objects:
        assert resource.provider is not None, resource.name
        assert "::user-cluster::" in resource.provider, resource.name
    for resource in cloud_resources:
        assert resource.provider is not None, resource.name
        assert "::user-aws::" in resource.provider, resource.name


def test_public_endpoints(synth_deployment: Synth) -> None:
    aws = synth_deployment(deployment_args("aws", public_endpoint=True))
    assert aws.named("sentiment-lambda-url").inputs["authorizationType"] == "NONE"
    url_permission = aws.named("sentiment-lambda-public-url").inputs
    assert (url_permission["principal"], url_permission["action"]) == (
        "*",
        "lambda:InvokeFunctionUrl",
    )
    invoke = aws.named("sentiment-lambda-public-invoke").inputs
    assert (invoke["action"], invoke["invokedViaFunctionUrl"]) == ("lambda:InvokeFunction", True)
    gcp = synth_deployment(deployment_args("gcp", public_endpoint=True))
    assert gcp.named("sentiment-cloud-run-public-invoker").inputs["member"] == "allUsers"
    azure = synth_deployment(deployment_args("azure", public_endpoint=True))
    assert (
        azure.named("sentiment-container-app-app").inputs["configuration"]["ingress"]["external"]
        is True
    )
    kubernetes = synth_deployment(deployment_args(None, public_endpoint=True))
    assert any(
        warning.startswith("public_endpoint: the Kubernetes target exposes a ClusterIP")
        for warning in _outputs(kubernetes)["warnings"]
    ), "Kubernetes cannot make the endpoint public and says so"


def test_invokers_of_private_endpoints(synth_deployment: Synth) -> None:
    members = ["serviceAccount:api@acme.iam.gserviceaccount.com", "group:ml@acme.com"]
    gcp = synth_deployment(deployment_args("gcp", invokers=members))
    _assert_child_contract(gcp, "gcp")
    for index, member in enumerate(members):
        granted = gcp.named(f"sentiment-cloud-run-invoker-{index}").inputs
        assert (granted["member"], granted["role"]) == (member, "roles/run.invoker")
    principals = ["210987654321", "arn:aws:iam::210987654321:role/platform-api"]
    aws = synth_deployment(deployment_args("aws", invokers=principals))
    _assert_child_contract(aws, "aws")
    for index, principal in enumerate(principals):
        url = aws.named(f"sentiment-lambda-invoker-{index}-url").inputs
        invoke = aws.named(f"sentiment-lambda-invoker-{index}-invoke").inputs
        assert (url["principal"], url["functionUrlAuthType"]) == (principal, "AWS_IAM")
        assert (invoke["principal"], invoke["invokedViaFunctionUrl"]) == (principal, True)
    azure = synth_deployment(deployment_args("azure", invokers=members))
    assert any(
        w.startswith("invokers: applies only to aws-lambda and gcp-cloud-run")
        for w in _outputs(azure)["warnings"]
    )


def test_cloud_run_service_accounts_are_unique_per_deployment(synth_deployment: Synth) -> None:
    prefix = "a-fairly-long-deployment-name-for"
    ids = {
        synth_deployment(deployment_args("gcp", deployment_name=f"{prefix}-{suffix}"))
        .named("sentiment-cloud-run-identity")
        .inputs["accountId"]
        for suffix in ("one", "two")
    }
    assert len(ids) == 2, "two long names with the same prefix get different accounts"
    for account_id in ids:
        assert re.fullmatch(r"[a-z][-a-z0-9]{4,28}[a-z0-9]", account_id), account_id


def test_gcp_labels_follow_gcp_rules_and_report_each_change(synth_deployment: Synth) -> None:
    result = synth_deployment(
        deployment_args("gcp", metadata={"team": "NLP", "version": "1.2", "owner": "ml"})
    )
    service = result.named("sentiment-cloud-run-service").inputs
    for labels in (service["labels"], service["template"]["labels"]):
        assert labels["team"] == "nlp"
        assert labels["version"] == "1_2"
        assert labels["owner"] == "ml"
    warnings = _outputs(result)["warnings"]
    assert any(w.startswith("metadata.team: GCP labels") and "team=nlp" in w for w in warnings)
    assert any(w.startswith("metadata.version:") and "version=1_2" in w for w in warnings)
    assert not any(w.startswith("metadata.owner") for w in warnings), "unchanged: no warning"
    digits = synth_deployment(deployment_args("gcp", metadata={"9lives": "yes"}))
    assert "9lives" not in digits.named("sentiment-cloud-run-service").inputs["labels"]
    assert any(
        w.startswith("metadata.9lives: GCP label keys start") for w in _outputs(digits)["warnings"]
    )


def test_usage_token_is_a_secret_reference(synth_deployment: Synth) -> None:
    usage = {"usage_url": "https://api.example.com/deployments/d/usage", "usage_token": "dpl_x"}
    kubernetes = synth_deployment(deployment_args(None, **usage))
    _assert_child_contract(kubernetes, None)
    secret = kubernetes.named("sentiment-kubernetes-usage-token").inputs
    assert (secret["kind"], secret["type"], secret["metadata"]["name"]) == (
        "Secret",
        "Opaque",
        "sentiment-usage",
    )
    assert _revealed(secret["stringData"]) == ({"token": "dpl_x"}, True)
    env = kubernetes.named("sentiment-kubernetes-deployment").inputs["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    [token] = [item for item in env if item["name"] == "AIDEPLOY_SERVE_USAGE_TOKEN"]
    assert token == {
        "name": "AIDEPLOY_SERVE_USAGE_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "sentiment-usage", "key": "token"}},
    }
    assert "dpl_x" not in json.dumps(env)
    azure = synth_deployment(deployment_args("azure", **usage))
    app = azure.named("sentiment-container-app-app").inputs
    [variable] = [
        item
        for item in app["template"]["containers"][0]["env"]
        if item["name"] == "AIDEPLOY_SERVE_USAGE_TOKEN"
    ]
    assert variable == {"name": "AIDEPLOY_SERVE_USAGE_TOKEN", "secretRef": "usage-token"}
    configuration, held_secret = _revealed(app["configuration"])
    assert configuration["secrets"] == [{"name": "usage-token", "value": "dpl_x"}]
    assert held_secret, "the token stays a Pulumi secret in the state"


def test_container_apps_reads_the_model_with_its_managed_identity(synth_deployment: Synth) -> None:
    result = synth_deployment(
        deployment_args(
            "azure",
            model_uri="az://models/sentiment/model.onnx",
            model_storage_account_id=STORAGE_ACCOUNT_ID,
        )
    )
    assignment = result.named("sentiment-container-app-model-access")
    assert assignment.inputs["scope"] == (
        f"{STORAGE_ACCOUNT_ID}/blobServices/default/containers/models"
    )
    assert assignment.inputs["roleDefinitionId"].endswith("2a2b9908-6ea1-4ae2-8e65-a410df84e7d1")
    identity = result.named("sentiment-container-app-identity").outputs
    env = {
        item["name"]: item["value"]
        for item in result.named("sentiment-container-app-app").inputs["template"]["containers"][0][
            "env"
        ]
    }
    assert env["AIDEPLOY_SERVE_MODEL_URI"] == "az://models/sentiment/model.onnx"
    assert env["AZURE_STORAGE_ACCOUNT_NAME"] == "acmemodels"
    assert env["AZURE_CLIENT_ID"] == identity["clientId"]
    assert not any("model_storage_account_id" in w for w in _outputs(result)["warnings"])
    https = synth_deployment(deployment_args("azure"))
    https_env = {
        item["name"]: item.get("value")
        for item in https.named("sentiment-container-app-app").inputs["template"]["containers"][0][
            "env"
        ]
    }
    assert https_env["AIDEPLOY_SERVE_MODEL_URI"] == "az://models/sentiment/model.onnx", (
        "a Blob https URL is handed to the runtime as az:// so adlfs uses the identity"
    )
    assert https_env["AZURE_STORAGE_ACCOUNT_NAME"] == "acmemodels"


def test_container_apps_pulls_from_its_registry_with_the_identity(synth_deployment: Synth) -> None:
    registry_id = (
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/acme"
    )
    result = synth_deployment(
        deployment_args("azure", image="acme.azurecr.io/serving:1", registry_id=registry_id)
    )
    _assert_child_contract(result, "azure")
    app = result.named("sentiment-container-app-app").inputs
    identity_id = "sentiment-container-app-identity-id"  # the mock engine's id
    assert app["configuration"]["registries"] == [
        {"server": "acme.azurecr.io", "identity": identity_id}
    ]
    pull = result.named("sentiment-container-app-registry-access").inputs
    assert pull["scope"] == registry_id
    assert pull["roleDefinitionId"].endswith("7f951dda-4ed3-4680-a7ca-43fe172d538d")
    without = synth_deployment(deployment_args("azure", image="acme.azurecr.io/serving:1"))
    assert any(w.startswith("registry_id: not given") for w in _outputs(without)["warnings"])
    public = synth_deployment(deployment_args("azure"))
    assert public.named("sentiment-container-app-app").inputs["configuration"]["registries"] == []


def test_container_apps_sizes_above_consumption_only_warn_on_a_given_environment(
    synth_deployment: Synth,
) -> None:
    args = deployment_args(
        "azure",
        resource_requirements={"cpu": "3", "memory": "6Gi"},
        environment_id="/subscriptions/s/resourceGroups/g/providers/Microsoft.App/managedEnvironments/e",
    )
    result = synth_deployment(args)
    assert any("needs a workload-profiles environment" in w for w in _outputs(result)["warnings"])
    app = result.named("sentiment-container-app-app").inputs
    assert app["template"]["containers"][0]["resources"] == {"cpu": 3.0, "memory": "6Gi"}


def test_kubernetes_on_a_known_cloud_prefers_only_its_spot_nodes(synth_deployment: Synth) -> None:
    args = deployment_args(
        None,
        target={"cloud": "gcp", "cluster": "gke-prod"},
        cost_optimization_policy={"use_spot_instances": True},
    )
    result = synth_deployment(args)
    _assert_child_contract(result, None)
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


@pytest.mark.parametrize(
    ("cloud", "region", "model_uri"),
    [
        ("aws", "us-east-1", MODEL_URIS["aws"]),
        ("gcp", "europe-west4", MODEL_URIS["gcp"]),
        ("azure", "westeurope", "az://models/sentiment/model.onnx"),
    ],
)
def test_pods_on_a_platform_cluster_get_an_identity_that_reads_the_model(
    synth_deployment: Synth, cloud: str, region: str, model_uri: str
) -> None:
    args = deployment_args(
        None,
        model_uri=model_uri,
        namespace="ml",
        target={"cloud": cloud, "region": region, "cluster": PLATFORM_STACK},
    )
    result = synth_deployment(args, stack_outputs={PLATFORM_STACK: PLATFORM_OUTPUTS})
    _assert_child_contract(result, None, POD_IDENTITY_TYPES[cloud])
    reference = result.named("sentiment-platform")
    assert reference.inputs["name"] == PLATFORM_STACK
    provider = result.named("sentiment-cluster").inputs
    assert provider["kubeconfig"] == PLATFORM_OUTPUTS[f"{cloud}-{region}-kubeconfig"]
    account = result.named("sentiment-kubernetes-service-account").inputs["metadata"]
    pod = result.named("sentiment-kubernetes-deployment").inputs["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == account["name"] == "sentiment"
    assert account["namespace"] == "ml"
    assert _outputs(result)["region"] == region
    assert _outputs(result)["warnings"] == []
    env = {item["name"]: item.get("value") for item in pod["spec"]["containers"][0]["env"]}
    if cloud == "aws":
        association = result.named("sentiment-kubernetes-pod-identity").inputs
        assert (association["clusterName"], association["namespace"]) == ("aideploy-eks", "ml")
        assert association["serviceAccount"] == "sentiment"
        assert (
            association["roleArn"] == result.named("sentiment-kubernetes-pod-role").outputs["arn"]
        )
        trust = json.loads(result.named("sentiment-kubernetes-pod-role").inputs["assumeRolePolicy"])
        assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        policy = json.loads(result.named("sentiment-kubernetes-pod-model-access").inputs["policy"])
        assert policy["Statement"][0]["Resource"] == [
            "arn:aws:s3:::acme-models/sentiment/model.onnx"
        ]
    elif cloud == "gcp":
        email = result.named("sentiment-kubernetes-pod-identity").outputs["email"]
        assert account["annotations"] == {"iam.gke.io/gcp-service-account": email}
        binding = result.named("sentiment-kubernetes-pod-workload-identity").inputs
        assert binding["role"] == "roles/iam.workloadIdentityUser"
        assert binding["member"] == "serviceAccount:acme-ml.svc.id.goog[ml/sentiment]"
        read = result.named("sentiment-kubernetes-pod-model-access").inputs
        assert (read["bucket"], read["member"]) == ("acme-models", f"serviceAccount:{email}")
    else:
        identity = result.named("sentiment-kubernetes-pod-identity").outputs
        assert account["annotations"] == {"azure.workload.identity/client-id": identity["clientId"]}
        assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        federation = result.named("sentiment-kubernetes-pod-federation").inputs
        assert federation["subject"] == "system:serviceaccount:ml:sentiment"
        assert federation["issuer"] == PLATFORM_OUTPUTS["azure-westeurope-oidc_issuer_url"]
        assert federation["audiences"] == ["api://AzureADTokenExchange"]
        read = result.named("sentiment-kubernetes-pod-model-access").inputs
        assert read["scope"] == f"{STORAGE_ACCOUNT_ID}/blobServices/default/containers/models"
        assert env["AIDEPLOY_SERVE_MODEL_URI"] == "az://models/sentiment/model.onnx"
        assert env["AZURE_STORAGE_ACCOUNT_NAME"] == "acmemodels"


def test_a_model_the_platform_cluster_cannot_read_is_refused(synth_deployment: Synth) -> None:
    args = deployment_args(
        None,
        model_uri=MODEL_URIS["gcp"],
        target={"cloud": "aws", "region": "us-east-1", "cluster": PLATFORM_STACK},
    )
    with pytest.raises(InputError, match=r"model_uri: .* cannot be read by EKS Pod Identity"):
        synth_deployment(args, stack_outputs={PLATFORM_STACK: PLATFORM_OUTPUTS})


def test_pods_without_an_identity_are_warned_about(synth_deployment: Synth) -> None:
    result = synth_deployment(deployment_args(None))
    assert any(
        w.startswith("service_account_name: not given") for w in _outputs(result)["warnings"]
    )
    named = synth_deployment(deployment_args(None, service_account_name="model-reader"))
    assert not any(w.startswith("service_account_name") for w in _outputs(named)["warnings"])
    pod = named.named("sentiment-kubernetes-deployment").inputs["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "model-reader"


def test_unmocked_stack_references_fail(synth_deployment: Synth) -> None:
    args = deployment_args(None, target={"cloud": "aws", "cluster": PLATFORM_STACK})
    with pytest.raises(AideployError, match=r"stack reference 'acme/platform/prod' has no mock"):
        synth_deployment(args)


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
        r"resource_requirements\.gpu: .*allowed: null",
    ),
    (
        deployment_args("aws", resource_requirements={"memory": "64Mi"}),
        r"resource_requirements\.memory: .*allowed: .*128Mi to 10240Mi",
    ),
    (
        deployment_args("aws", resource_requirements={"timeout": 901}),
        r"resource_requirements\.timeout: .*allowed: 1-900",
    ),
    (deployment_args("aws", image=IMAGE), r"image: .*Amazon ECR"),
    (
        deployment_args("aws", target={"cloud": "aws", "region": "eu-west-1"}),
        r"image: .* is in ECR region us-east-1; AWS Lambda runs images only from its own region",
    ),
    (
        deployment_args("aws", model_uri=MODEL_URIS["gcp"]),
        r"model_uri: .*cannot be read by the Lambda function's role; expected s3://<bucket>/<obj",
    ),
    (deployment_args("aws", model_uri="s3://bucket-only"), r"model_uri: .* names no object"),
    (
        deployment_args("aws", log_retention_days=10),
        r"log_retention_days: 10 is not allowed; allowed: 1, 3",
    ),
    (deployment_args("aws", invokers=["everyone"]), r"invokers\[0\]: 'everyone' is not an AWS"),
    (
        deployment_args("gcp", resource_requirements={"cpu": "3"}),
        r"resource_requirements\.cpu: '3' .*allowed: 1, 2, 4, 6, 8",
    ),
    (
        deployment_args("gcp", resource_requirements={"cpu": "1", "memory": "16Gi"}),
        r"resource_requirements\.memory: .*allowed: 128Mi to 4Gi",
    ),
    (deployment_args("gcp", resource_requirements={"gpu": 1}), r"resource_requirements\.gpu"),
    (
        deployment_args("gcp", deployment_name="9model"),
        r"deployment_name: '9model' is not a valid Cloud Run service name; .*starting with a letter",
    ),
    (
        deployment_args("gcp", deployment_name="m" * 50),
        r"deployment_name: 'm{50}' is not a valid Cloud Run service name; allowed: 1-49",
    ),
    (deployment_args("gcp", invokers=["api@acme.com"]), r"invokers\[0\]: .*not an IAM member"),
    (
        deployment_args("azure", resource_requirements={"cpu": "1", "memory": "3Gi"}),
        r"resource_requirements: .*allowed cpu/memory pairs: 0\.25/0\.5Gi, 0\.5/1Gi, 0\.75/1\.5Gi",
    ),
    (
        deployment_args("azure", resource_requirements={"timeout": 300}),
        r"resource_requirements\.timeout: .*allowed: 1-240",
    ),
    (
        deployment_args("azure", deployment_name="a-very-long-deployment-name-for-azure-apps"),
        r"deployment_name: .*2-32",
    ),
    (
        deployment_args("azure", model_uri="az://models/sentiment/model.onnx"),
        r"model_uri: 'az://models/sentiment/model\.onnx' names no storage account",
    ),
    (
        {**deployment_args(None), "deployment_type": "serverless"},
        r"target\.cloud: none .*allowed: aws, gcp, azure",
    ),
    (
        deployment_args(None, deployment_type="edge"),
        r"deployment_type: 'edge' is not one of kubernetes, serverless",
    ),
    (
        deployment_args(None, target={"cloud": "local"}),
        r"target\.cloud: 'local' is not one of aws, gcp, azure \('local' deployments run",
    ),
    (
        deployment_args("gcp", target={"cloud": "gcp", "cluster": "prod"}),
        r"target\.cluster: applies only",
    ),
    (
        deployment_args(None, target={"cloud": "mars"}),
        r"target\.cloud: 'mars' is not one of aws, gcp, azure",
    ),
    (
        deployment_args(
            None,
            cost_optimization_policy={"use_spot_instances": True, "on_demand_base_instances": 9},
        ),
        r"on_demand_base_instances: 9 must be <= scaling_policy\.max_instances \(5\)",
    ),
    (
        deployment_args(None, scaling_policy={"min": 1}),
        r"scaling_policy\.min: Extra inputs are not permitted",
    ),
    (
        deployment_args(None, resource_requirements={"cpu": "lots"}),
        r"resource_requirements\.cpu: 'lots' is not a Kubernetes quantity",
    ),
    (
        deployment_args(None, deployment_name="Not_A_Label"),
        r"deployment_name: must be 1-63 lowercase",
    ),
    (
        deployment_args(None, model_format="tensorflow"),
        r"model_format: 'tensorflow' is not one of onnx, pytorch",
    ),
    ({"image": IMAGE}, r"model_uri: required \(or model_uris"),
    (
        deployment_args(None, model_uris={"mars": "s3://a/b"}),
        r"model_uris\.mars: not a cloud; allowed keys: aws, gcp, azure",
    ),
    (
        deployment_args(None, model_uris={"gcp": MODEL_URIS["aws"]}),
        r"model_uris\.gcp: .* cannot be read by Google Cloud identities; expected gs://",
    ),
    (
        deployment_args(None, cost_optimization_policy={"multi_cloud_enabled": True}),
        r"clusters: Kubernetes multi-cloud placement needs the cluster of each place",
    ),
    (
        deployment_args(None, clusters={"aws": "eks-prod"}),
        r"clusters\.aws: keys are cloud/region",
    ),
]


@pytest.mark.parametrize(("args", "message"), INVALID)
def test_invalid_combinations_fail_at_construction(
    synth_deployment: Synth, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
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
