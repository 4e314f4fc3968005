"""No target: with multi_cloud_enabled the deployment goes where the price catalog says it is
cheapest, and the choice and the runner-up are outputs. Configure the provider of every cloud
it may choose (AWS, GCP, Azure)."""

import pulumi

from aideploy_iac import DeploymentType, ModelDeployment

config = pulumi.Config()

ranker = ModelDeployment(
    "ranker",
    {
        "model_uri": config.get("model_uri") or "gs://acme-models/ranker/model.onnx",
        "image": config.get("image") or "ghcr.io/acme/aideploy-serving:1.0",
        "deployment_type": DeploymentType.SERVERLESS,
        "resource_requirements": {"cpu": "1", "memory": "2Gi"},
        "scaling_policy": {"min_instances": 0, "max_instances": 5},
        "cost_optimization_policy": {"multi_cloud_enabled": True, "hibernation_enabled": True},
    },
)

pulumi.export("placement", ranker.placement_choice)
pulumi.export("estimated_monthly_cost", ranker.placement_estimated_monthly_cost)
pulumi.export("runner_up", ranker.placement_runner_up)
pulumi.export("runner_up_estimated_monthly_cost", ranker.placement_runner_up_estimated_monthly_cost)
pulumi.export("endpoint_url", ranker.endpoint_url)
