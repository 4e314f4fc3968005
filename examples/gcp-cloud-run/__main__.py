"""A model on Cloud Run, scaling to zero between requests and reading the model from GCS."""

import pulumi

from aideploy_iac import DeploymentType, ModelDeployment, TargetCloud

config = pulumi.Config()

embedder = ModelDeployment(
    "embedder",
    {
        "model_uri": config.get("model_uri") or "gs://acme-models/embedder/model.onnx",
        "image": config.get("image")
        or "europe-west4-docker.pkg.dev/acme/aideploy-images/aideploy-serving:1.0",
        "deployment_type": DeploymentType.SERVERLESS,
        "target": {"cloud": TargetCloud.GCP, "region": "europe-west4"},
        "resource_requirements": {"cpu": "2", "memory": "4Gi", "timeout": 120},
        "scaling_policy": {"min_instances": 0, "max_instances": 20},
        "cost_optimization_policy": {"hibernation_enabled": True},
        "public_endpoint": True,
    },
)

pulumi.export("endpoint_url", embedder.endpoint_url)
pulumi.export("warnings", embedder.warnings)
