"""Pure functions that render a deployment's Kubernetes objects as plain dicts.

The component hands these dicts to ``pulumi_kubernetes`` unchanged, the tests validate them
against the Kubernetes OpenAPI schemas and the KEDA CRDs, and ``aideploy synth`` writes them as
YAML, so what is validated is exactly what is deployed. Values may be ``pulumi.Input``s (the
model URI, image, namespace, identity annotations and the usage token) where the caller passes
them; everything structural is computed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from aideploy.quantity import format_cpu
from aideploy.schema import Cloud
from aideploy_iac.args import DeploymentSpec
from aideploy_iac.policies import ReplicaSplit, replica_split, requests_per_instance
from aideploy_iac.runtime_contract import (
    HEALTH_LIVE_PATH,
    HEALTH_READY_PATH,
    MODEL_DIR,
    SERVING_PORT,
    USAGE_TOKEN_VARIABLE,
    runtime_environment,
    usage_token,
)

__all__ = [
    "SPOT_NODE_LABELS",
    "KubernetesOptions",
    "ServiceAccountSpec",
    "render_manifests",
    "service_url",
]

Manifest = dict[str, Any]

# (node label, its value on spot nodes, taint key or None) per managed Kubernetes offering.
SPOT_NODE_LABELS: dict[Cloud, tuple[str, str, str | None]] = {
    Cloud.AWS: ("eks.amazonaws.com/capacityType", "SPOT", None),
    Cloud.GCP: ("cloud.google.com/gke-spot", "true", "cloud.google.com/gke-spot"),
    Cloud.AZURE: (
        "kubernetes.azure.com/scalesetpriority",
        "spot",
        "kubernetes.azure.com/scalesetpriority",
    ),
}
GPU_RESOURCE = "nvidia.com/gpu"
KEDA_HTTP_INTERCEPTOR_SERVICE = "keda-add-ons-http-interceptor-proxy"
KEDA_HTTP_INTERCEPTOR_PORT = 8080
KEDA_HTTP_EXTERNAL_SCALER = "keda-add-ons-http-external-scaler"
KEDA_HTTP_EXTERNAL_SCALER_PORT = 9090


@dataclass(frozen=True)
class ServiceAccountSpec:
    """A service account the deployment creates, bound to a cloud identity that reads the model."""

    name: str
    annotations: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """GKE ``iam.gke.io/gcp-service-account``, AKS ``azure.workload.identity/client-id``."""


@dataclass(frozen=True)
class KubernetesOptions:
    """Where and how the objects are placed in the cluster."""

    namespace: pulumi.Input[str] = "default"
    spot_clouds: Sequence[Cloud] = field(default=(Cloud.AWS, Cloud.GCP, Cloud.AZURE))
    """Whose spot node labels to prefer; all three when the cluster's cloud is unknown."""
    keda_namespace: str = "keda"
    """Namespace of the KEDA HTTP add-on (interceptor and external scaler)."""
    service_account_name: pulumi.Input[str] | None = None
    """An existing service account whose cloud identity may read the model."""
    service_account: ServiceAccountSpec | None = None
    """A service account to create for the pods (wins over ``service_account_name``)."""
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    """Extra pod labels, e.g. ``azure.workload.identity/use`` for AKS workload identity."""
    storage_account_id: pulumi.Input[str] | None = None
    """Blob account of an ``az://`` model (its name goes to the runtime)."""


def _text(*parts: pulumi.Input[str]) -> pulumi.Input[str]:
    """Concatenate; a plain string unless a part is an output (the namespace may be one)."""
    if all(isinstance(part, str) for part in parts):
        return "".join(str(part) for part in parts)
    return pulumi.Output.concat(*parts)


def _usage_secret_name(spec: DeploymentSpec) -> str:
    return f"{spec.name}-usage"


def _common_labels(spec: DeploymentSpec) -> dict[str, str]:
    return {
        **spec.labels,
        "app.kubernetes.io/name": "aideploy-model",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/managed-by": "aideploy",
    }


def _selector(spec: DeploymentSpec) -> dict[str, str]:
    return {"app.kubernetes.io/instance": spec.name, "app.kubernetes.io/name": "aideploy-model"}


def _metadata(spec: DeploymentSpec, name: str, options: KubernetesOptions) -> dict[str, Any]:
    return {"name": name, "namespace": options.namespace, "labels": _common_labels(spec)}


def _spot_affinity(options: KubernetesOptions) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Prefer spot nodes (falling back to on-demand when spot is gone) and tolerate their taints."""
    preferences = [
        {
            "weight": 100,
            "preference": {
                "matchExpressions": [{"key": label, "operator": "In", "values": [value]}]
            },
        }
        for label, value, _ in (SPOT_NODE_LABELS[cloud] for cloud in options.spot_clouds)
    ]
    tolerations = [
        {"key": taint, "operator": "Equal", "value": value, "effect": "NoSchedule"}
        for _, value, taint in (SPOT_NODE_LABELS[cloud] for cloud in options.spot_clouds)
        if taint is not None
    ]
    return {
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferences}
    }, tolerations


def _on_demand_affinity(options: KubernetesOptions) -> dict[str, Any]:
    """Require nodes that are not spot (NotIn also matches nodes without the label)."""
    expressions = [
        {"key": label, "operator": "NotIn", "values": [value]}
        for label, value, _ in (SPOT_NODE_LABELS[cloud] for cloud in options.spot_clouds)
    ]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def _pod_template(
    spec: DeploymentSpec, options: KubernetesOptions, capacity: str
) -> dict[str, Any]:
    resources = spec.resources
    quantities: dict[str, Any] = {
        "cpu": format_cpu(resources.cpu_cores),
        "memory": resources.memory,
    }
    limits = dict(quantities)
    tolerations: list[dict[str, Any]] = []
    if resources.gpu:
        limits[GPU_RESOURCE] = resources.gpu
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    environment = runtime_environment(spec, storage_account_id=options.storage_account_id)
    variables: list[dict[str, Any]] = [
        {"name": key, "value": value} for key, value in environment.items()
    ]
    if usage_token(spec) is not None:
        variables.append(
            {
                "name": USAGE_TOKEN_VARIABLE,
                "valueFrom": {"secretKeyRef": {"name": _usage_secret_name(spec), "key": "token"}},
            }
        )
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.image,
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "env": variables,
        "resources": {"requests": quantities, "limits": limits},
        "startupProbe": {
            # Downloading and warming up a large model can take minutes.
            "httpGet": {"path": HEALTH_READY_PATH, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 120,
        },
        "readinessProbe": {
            "httpGet": {"path": HEALTH_READY_PATH, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": HEALTH_LIVE_PATH, "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the container's own scratch dir
        ],
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "model", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        # In-flight requests may take the whole timeout to finish after SIGTERM.
        "terminationGracePeriodSeconds": resources.timeout + 10,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": _selector(spec)},
            }
        ],
    }
    if options.service_account is not None:
        pod_spec["serviceAccountName"] = options.service_account.name
    elif options.service_account_name is not None:
        pod_spec["serviceAccountName"] = options.service_account_name
    if capacity == "spot":
        affinity, spot_tolerations = _spot_affinity(options)
        pod_spec["affinity"] = affinity
        tolerations.extend(spot_tolerations)
    elif capacity == "on-demand":
        pod_spec["affinity"] = _on_demand_affinity(options)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    labels = {**_common_labels(spec), **options.pod_labels, "aideploy.dev/capacity": capacity}
    return {"metadata": {"labels": labels}, "spec": pod_spec}


def _deployment(
    spec: DeploymentSpec,
    options: KubernetesOptions,
    name: str,
    capacity: str,
    replicas: int | None,
) -> Manifest:
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": {**_selector(spec), "aideploy.dev/capacity": capacity}},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": _pod_template(spec, options, capacity),
    }
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, name, options),
        "spec": deployment_spec,
    }


def _cluster_ip_service(spec: DeploymentSpec, options: KubernetesOptions, name: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, name, options),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(spec),
            "ports": [
                {"name": "http", "port": SERVING_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def _interceptor_service(spec: DeploymentSpec, options: KubernetesOptions) -> Manifest:
    """The deployment's address, resolving to the KEDA HTTP interceptor that wakes it up."""
    interceptor = f"{KEDA_HTTP_INTERCEPTOR_SERVICE}.{options.keda_namespace}.svc.cluster.local"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, spec.name, options),
        "spec": {
            "type": "ExternalName",
            "externalName": interceptor,
            "ports": [{"name": "http", "port": KEDA_HTTP_INTERCEPTOR_PORT, "protocol": "TCP"}],
        },
    }


def _autoscaler(spec: DeploymentSpec, options: KubernetesOptions, split: ReplicaSplit) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec, spec.name, options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": split.scaled_min,
            "maxReplicas": split.scaled_max,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.scaling.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }


def _http_scaled_object(
    spec: DeploymentSpec, options: KubernetesOptions, split: ReplicaSplit
) -> Manifest:
    hosts = [
        _text(spec.name, ".", options.namespace, suffix)
        for suffix in (".svc.cluster.local", ".svc", "")
    ]
    metadata = _metadata(spec, spec.name, options)
    # The ScaledObject below combines the HTTP trigger with the CPU target, so the add-on must
    # not create its own.
    metadata["annotations"] = {"httpscaledobject.keda.sh/skip-scaledobject-creation": "true"}
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": metadata,
        "spec": {
            "hosts": hosts,
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": spec.name,
                "service": f"{spec.name}-backend",
                "port": SERVING_PORT,
            },
            "replicas": {"min": split.scaled_min, "max": split.scaled_max},
            "scaledownPeriod": spec.cost.hibernation_idle_timeout,
            "scalingMetric": {
                "concurrency": {"targetValue": requests_per_instance(spec.resources.cpu_cores)}
            },
            "timeouts": {"responseHeader": f"{spec.resources.timeout}s"},
        },
    }


def _scaled_object(
    spec: DeploymentSpec, options: KubernetesOptions, split: ReplicaSplit
) -> Manifest:
    scaler = (
        f"{KEDA_HTTP_EXTERNAL_SCALER}.{options.keda_namespace}:{KEDA_HTTP_EXTERNAL_SCALER_PORT}"
    )
    idle = spec.cost.hibernation_idle_timeout
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(spec, spec.name, options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicaCount": split.scaled_min,
            "maxReplicaCount": split.scaled_max,
            "cooldownPeriod": idle,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": min(idle, 3600)}}
                }
            },
            "triggers": [
                {
                    "type": "external-push",
                    "name": "http-requests",
                    "metadata": {"scalerAddress": scaler, "httpScaledObject": spec.name},
                },
                {
                    "type": "cpu",
                    "name": "cpu-utilization",
                    "metricType": "Utilization",
                    "metadata": {"value": str(spec.scaling.target_cpu_utilization)},
                },
            ],
        },
    }


def _disruption_budget(spec: DeploymentSpec, options: KubernetesOptions) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec, spec.name, options),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(spec)}},
    }


def uses_keda(spec: DeploymentSpec) -> bool:
    """Scale-to-zero through KEDA, unless the deployment is hibernated (then nothing scales)."""
    return spec.cost.hibernation_enabled and not spec.hibernated


def _service_account(
    spec: DeploymentSpec, options: KubernetesOptions, account: ServiceAccountSpec
) -> Manifest:
    metadata = _metadata(spec, account.name, options)
    if account.annotations:
        metadata["annotations"] = dict(account.annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def _usage_secret(
    spec: DeploymentSpec, options: KubernetesOptions, token: pulumi.Input[str]
) -> Manifest:
    """The usage token as a Secret the pods read by reference, never a plain env value."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, _usage_secret_name(spec), options),
        "type": "Opaque",
        "stringData": {"token": token},
    }


def render_manifests(spec: DeploymentSpec, options: KubernetesOptions) -> dict[str, Manifest]:
    """Every object of the deployment by role, in apply order (what pods need before them,
    Services before their routes)."""
    split = replica_split(spec.scaling, spec.cost)
    capacity = "spot" if spec.cost.use_spot_instances else "any"
    keda = uses_keda(spec)
    manifests: dict[str, Manifest] = {}
    if options.service_account is not None:
        manifests["service-account"] = _service_account(spec, options, options.service_account)
    token = usage_token(spec)
    if token is not None:
        manifests["usage-token"] = _usage_secret(spec, options, token)
    if keda:
        manifests["service"] = _interceptor_service(spec, options)
        manifests["backend-service"] = _cluster_ip_service(spec, options, f"{spec.name}-backend")
    else:
        manifests["service"] = _cluster_ip_service(spec, options, spec.name)
    autoscaled = not spec.hibernated and split.scaled_max > 0
    manifests["deployment"] = _deployment(
        spec, options, spec.name, capacity, None if autoscaled else 0
    )
    if split.on_demand:
        manifests["on-demand-deployment"] = _deployment(
            spec,
            options,
            f"{spec.name}-on-demand",
            "on-demand",
            0 if spec.hibernated else split.on_demand,
        )
    if autoscaled and keda:
        manifests["http-scaled-object"] = _http_scaled_object(spec, options, split)
        manifests["scaled-object"] = _scaled_object(spec, options, split)
    elif autoscaled:
        manifests["autoscaler"] = _autoscaler(spec, options, split)
    manifests["disruption-budget"] = _disruption_budget(spec, options)
    return manifests


def service_url(spec: DeploymentSpec, options: KubernetesOptions) -> pulumi.Input[str]:
    """The in-cluster address clients call, whether or not KEDA fronts the deployment."""
    port = KEDA_HTTP_INTERCEPTOR_PORT if uses_keda(spec) else SERVING_PORT
    return _text("http://", spec.name, ".", options.namespace, f".svc.cluster.local:{port}")
