"""A model on Azure Container Apps, reading the model from Blob storage with a managed identity."""

import pulumi

from aideploy_iac import Cloud, DeploymentType, ModelDeployment

config = pulumi.Config()

detector = ModelDeployment(
    "detector",
    {
        "model_uri": config.get("model_uri")
        or "https://acmemodels.blob.core.windows.net/models/detector/model.onnx",
        "image": config.get("image") or "acmeregistry.azurecr.io/aideploy-serving:1.0",
        "deployment_type": DeploymentType.SERVERLESS,
        "target": {"cloud": Cloud.AZURE, "region": "westeurope"},
        "resource_requirements": {"cpu": "1", "memory": "2Gi", "timeout": 60},
        "scaling_policy": {"min_instances": 0, "max_instances": 10, "target_cpu_utilization": 70},
        "cost_optimization_policy": {"hibernation_enabled": True, "hibernation_idle_timeout": 600},
        "model_storage_account_id": config.get("storage_account_id")
        or "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/acme"
        "/providers/Microsoft.Storage/storageAccounts/acmemodels",
        "public_endpoint": True,
    },
)

pulumi.export("endpoint_url", detector.endpoint_url)
pulumi.export("warnings", detector.warnings)
