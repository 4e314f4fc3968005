"""A model on AWS Lambda: the serving image from ECR, the model read from S3.

The image must be in ECR (the ``platform`` stack exports a registry) and carry the AWS Lambda
Web Adapter. One instance is kept warm with provisioned concurrency.
"""

import pulumi

from aideploy_iac import DeploymentType, ModelDeployment, TargetCloud

config = pulumi.Config()

classifier = ModelDeployment(
    "classifier",
    {
        "model_uri": config.get("model_uri") or "s3://acme-models/classifier/model.onnx",
        "image": config.get("image")
        or "123456789012.dkr.ecr.us-east-1.amazonaws.com/aideploy-serving:1.0",
        "deployment_type": DeploymentType.SERVERLESS,
        "target": {"cloud": TargetCloud.AWS, "region": "us-east-1"},
        "resource_requirements": {"memory": "3538Mi", "timeout": 60},
        "scaling_policy": {"min_instances": 1, "max_instances": 50},
        "log_retention_days": 30,
        "public_endpoint": False,
    },
)

pulumi.export("endpoint_url", classifier.endpoint_url)
pulumi.export("warnings", classifier.warnings)
