"""A model on Kubernetes: the cluster of an aideploy platform stack (config ``platform_stack``:
org/project/stack), or of your current kubeconfig context (or pass a provider in opts).

On a platform stack's cluster the pods get an EKS Pod Identity role that reads exactly the model
object; on another cluster, give ``service_account_name`` an identity that can read it. The
cluster needs KEDA and its HTTP add-on (the platform stack installs both). Two instances stay on
on-demand nodes; the rest prefer EKS spot nodes and fall back to on-demand when spot capacity
is gone; after 15 idle minutes the spot part scales to zero.
"""

import pulumi

from aideploy_iac import DeploymentType, ModelDeployment, TargetArgs, TargetCloud

config = pulumi.Config()

target: TargetArgs = {"cloud": TargetCloud.AWS, "region": "us-east-1"}
platform_stack = config.get("platform_stack")
if platform_stack:
    target["cluster"] = platform_stack

sentiment = ModelDeployment(
    "sentiment",
    {
        "model_uri": config.get("model_uri") or "s3://acme-models/sentiment/model.onnx",
        "image": config.get("image") or "ghcr.io/acme/aideploy-serving:1.0",
        "deployment_type": DeploymentType.KUBERNETES,
        "target": target,
        "namespace": "default",
        "resource_requirements": {"cpu": "1", "memory": "2Gi", "timeout": 30},
        "scaling_policy": {"min_instances": 2, "max_instances": 10, "target_cpu_utilization": 65},
        "cost_optimization_policy": {
            "use_spot_instances": True,
            "on_demand_base_instances": 2,
            "hibernation_enabled": True,
            "hibernation_idle_timeout": 900,
        },
        "metadata": {"team": "nlp"},
    },
)

pulumi.export("endpoint_url", sentiment.endpoint_url)
pulumi.export("min_instances", sentiment.effective_min_instances)
pulumi.export("warnings", sentiment.warnings)
