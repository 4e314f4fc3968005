"""A model on Azure Container Apps: the image pulled from Azure Container Registry and the model
read from Blob storage, both with the app's managed identity (AcrPull and Storage Blob Data
Reader are granted to it). The Azure platform stack exports the ids used here."""

import pulumi

from aideploy_iac import DeploymentType, ModelDeployment, TargetCloud

config = pulumi.Config()
group = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/acme/providers"

detector = ModelDeployment(
    "detector",
    {
        "model_uri": config.get("model_uri") or "az://models/detector/model.onnx",
        "image": config.get("image") or "acmeregistry.azurecr.io/aideploy-serving:1.0",
        "deployment_type": DeploymentType.SERVERLESS,
        "target": {"cloud": TargetCloud.AZURE, "region": "westeurope"},
        "resource_requirements": {"cpu": "1.5", "memory": "3Gi", "timeout": 60},
        "scaling_policy": {"min_instances": 0, "max_instances": 10, "target_cpu_utilization": 70},
        "cost_optimization_policy": {"hibernation_enabled": True, "hibernation_idle_timeout": 600},
        "model_storage_account_id": config.get("storage_account_id")
        or f"{group}/Microsoft.Storage/storageAccounts/acmemodels",
        "registry_id": config.get("registry_id")
        or f"{group}/Microsoft.ContainerRegistry/registries/acmeregistry",
        "public_endpoint": True,
    },
)

pulumi.export("endpoint_url", detector.endpoint_url)
pulumi.export("warnings", detector.warnings)
