"""No target: with multi_cloud_enabled the deployment goes where the price catalog says it is
cheapest among the places that can run it, and the choice and the runner-up are outputs.

A copy of the model in each cloud's object store (the platform stacks export the buckets) lets
every cloud be chosen; AWS Lambda runs only ECR images of its own region, so the image has an
ECR copy for AWS. Configure the provider of every cloud it may choose (AWS, GCP, Azure)."""

import pulumi

from aideploy_iac import DeploymentType, ModelDeployment

config = pulumi.Config()

ranker = ModelDeployment(
    "ranker",
    {
        "model_uris": {
            "aws": config.get("aws_model_uri") or "s3://acme-models/ranker/model.onnx",
            "gcp": config.get("gcp_model_uri") or "gs://acme-models/ranker/model.onnx",
            "azure": config.get("azure_model_uri")
            or "https://acmemodels.blob.core.windows.net/models/ranker/model.onnx",
        },
        "image": config.get("image") or "ghcr.io/acme/aideploy-serving:1.0",
        "images": {
            "aws": config.get("ecr_image")
            or "123456789012.dkr.ecr.us-east-1.amazonaws.com/aideploy-serving:1.0"
        },
        "deployment_type": DeploymentType.SERVERLESS,
        "resource_requirements": {"cpu": "1", "memory": "2Gi"},
        "scaling_policy": {"min_instances": 0, "max_instances": 5},
        "cost_optimization_policy": {"multi_cloud_enabled": True, "hibernation_enabled": True},
        "model_storage_account_id": config.get("storage_account_id")
        or "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/acme"
        "/providers/Microsoft.Storage/storageAccounts/acmemodels",
    },
)

pulumi.export("placement", ranker.placement_choice)
pulumi.export("estimated_monthly_cost", ranker.placement_estimated_monthly_cost)
pulumi.export("runner_up", ranker.placement_runner_up)
pulumi.export("runner_up_estimated_monthly_cost", ranker.placement_runner_up_estimated_monthly_cost)
pulumi.export("endpoint_url", ranker.endpoint_url)
pulumi.export("warnings", ranker.warnings)
