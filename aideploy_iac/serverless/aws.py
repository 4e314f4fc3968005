"""``LambdaModelDeployment``: the serving runtime as an AWS Lambda container-image function.

``pulumi_aws`` is imported inside the constructor so that ``import aideploy_iac`` works without
the AWS extra installed. The image must carry the AWS Lambda Web Adapter (an extension that
forwards Lambda invocations to the runtime's HTTP port); the variables set here configure it.
"""

import json
import re
from typing import Any, NotRequired

import pulumi

from aideploy.errors import InputError
from aideploy.schema import Cloud
from aideploy_iac.access import partition_of, s3_read_statement
from aideploy_iac.args import (
    DeploymentArgs,
    DeploymentSpec,
    model_location,
    require_readable,
    resolve_spec,
)
from aideploy_iac.policies import MODEL_READERS, TargetKind, TargetPlan, check_image, plan_lambda
from aideploy_iac.runtime_contract import (
    HEALTH_READY_PATH,
    SERVING_PORT,
    USAGE_TOKEN_VARIABLE,
    runtime_environment,
    usage_token,
)

__all__ = ["LambdaDeploymentArgs", "LambdaModelDeployment"]

_AWS_PRINCIPAL = re.compile(r"^(\d{12}|arn:aws[a-z-]*:iam::\d{12}:(root|role/\S+|user/\S+))$")
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827)
EPHEMERAL_STORAGE_MIB = (512, 10240)


class LambdaDeploymentArgs(DeploymentArgs):
    """Arguments of a deployment on AWS Lambda."""

    region: NotRequired[str]
    """AWS region of the function (default: the AWS provider's region)."""
    log_retention_days: NotRequired[int]
    """Days the function's logs are kept (default 14; a CloudWatch retention value)."""
    ephemeral_storage_mib: NotRequired[int]
    """Size of /tmp, where the model is downloaded, 512-10240 MiB (default 2048)."""
    invokers: NotRequired[list[pulumi.Input[str]]]
    """AWS principals (account ids or IAM role/user ARNs) allowed to call the IAM-authenticated function URL."""


def _checked_invokers(invokers: list[pulumi.Input[str]]) -> list[pulumi.Input[str]]:
    for index, principal in enumerate(invokers):
        if isinstance(principal, str) and not _AWS_PRINCIPAL.match(principal):
            raise InputError(
                f"invokers[{index}]: {principal!r} is not an AWS principal; expected an account "
                "id (123456789012) or an IAM role or user ARN"
            )
    return invokers


def _check_choice(value: int, allowed: tuple[int, ...], field: str) -> int:
    if value not in allowed:
        raise InputError(
            f"{field}: {value} is not allowed; allowed: {', '.join(map(str, allowed))}"
        )
    return value


def _lambda_environment(spec: DeploymentSpec) -> dict[str, Any]:
    environment = runtime_environment(spec)
    # Lambda has no secret references; its variables are encrypted at rest and the token
    # stays a Pulumi secret in the state.
    token = usage_token(spec)
    if token is not None:
        environment[USAGE_TOKEN_VARIABLE] = token
    # Only /tmp is writable on Lambda; PORT also tells the Web Adapter where to forward.
    environment["AIDEPLOY_SERVE_MODEL_DIR"] = "/tmp/models"  # noqa: S108 - Lambda's only writable dir
    environment["AWS_LWA_PORT"] = str(SERVING_PORT)
    environment["AWS_LWA_READINESS_CHECK_PATH"] = HEALTH_READY_PATH
    return environment


def _function_policy(model_uri: str, log_group_arn: str) -> str:
    """Least privilege: read this one model object (when it is in S3), write this function's
    logs. The partition comes from the log group's ARN (aws, aws-cn, aws-us-gov)."""
    statements: list[dict[str, Any]] = []
    if model_location(model_uri).cloud is Cloud.AWS:
        statements.append(s3_read_statement(model_uri, partition_of(log_group_arn)))
    statements.append(
        {
            "Sid": "WriteLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [f"{log_group_arn}:*"],
        }
    )
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


_ASSUME_ROLE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def _url_permissions(
    name: str,
    principal: pulumi.Input[str],
    auth: str,
    function: pulumi.Input[str],
    qualifier: pulumi.Input[str] | None,
    region: str | None,
    opts: pulumi.ResourceOptions,
) -> None:
    """Invoking through a function URL needs both lambda:InvokeFunctionUrl and (for URLs
    created since October 2025) lambda:InvokeFunction restricted to function-URL calls."""
    import pulumi_aws as aws

    aws.lambda_.Permission(
        f"{name}-url",
        action="lambda:InvokeFunctionUrl",
        function=function,
        qualifier=qualifier,
        principal=principal,
        function_url_auth_type=auth,
        region=region,
        opts=opts,
    )
    aws.lambda_.Permission(
        f"{name}-invoke",
        action="lambda:InvokeFunction",
        function=function,
        qualifier=qualifier,
        principal=principal,
        invoked_via_function_url=True,
        region=region,
        opts=opts,
    )


class LambdaModelDeployment(pulumi.ComponentResource):
    """A model served by AWS Lambda behind a function URL."""

    endpoint_url: pulumi.Output[str]
    """HTTPS function URL of the deployment's Open Inference Protocol endpoint."""
    region: pulumi.Output[str]
    """Region the function runs in (the provider's when none was given)."""
    warnings: pulumi.Output[list[str]]
    """Each requested policy AWS Lambda cannot honour, and what it does instead."""

    _plan: TargetPlan

    @property
    def plan(self) -> TargetPlan:
        """What the target makes of each policy field (effective values and warnings)."""
        return self._plan

    def __init__(
        self,
        name: str,
        args: LambdaDeploymentArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("aideploy:index:LambdaModelDeployment", name, None, opts)
        spec, unlabelled = resolve_spec(name, args)
        self._plan = plan_lambda(spec)
        region = args.get("region")
        check_image(TargetKind.AWS_LAMBDA, spec.image, region)
        if isinstance(spec.model_uri, str):
            require_readable(
                model_location(spec.model_uri), Cloud.AWS, MODEL_READERS[TargetKind.AWS_LAMBDA]
            )
        invokers = _checked_invokers(list(args.get("invokers", [])))
        warnings = [*unlabelled, *self._plan.warnings]
        if invokers and spec.public_endpoint:
            warnings.append(
                "invokers: not needed, public_endpoint lets anyone call the function URL"
            )
        retention = _check_choice(
            args.get("log_retention_days", 14), LOG_RETENTION_DAYS, "log_retention_days"
        )
        storage = args.get("ephemeral_storage_mib", 2048)
        low, high = EPHEMERAL_STORAGE_MIB
        if not low <= storage <= high:
            raise InputError(f"ephemeral_storage_mib: {storage} is outside {low}-{high}")

        import pulumi_aws as aws

        effective = self._plan.effective
        tags = {**spec.labels, "managed-by": "aideploy", "aideploy-deployment": spec.name}
        child = pulumi.ResourceOptions(parent=self)
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/lambda/{spec.name}",
            retention_in_days=retention,
            region=region,
            tags=tags,
            opts=child,
        )
        role = aws.iam.Role(f"{name}-role", assume_role_policy=_ASSUME_ROLE, tags=tags, opts=child)
        policy = aws.iam.RolePolicy(
            f"{name}-model-access",
            role=role.id,
            policy=pulumi.Output.all(pulumi.Output.from_input(spec.model_uri), log_group.arn).apply(
                lambda values: _function_policy(values[0], values[1])
            ),
            opts=child,
        )
        provisioned = 0 if spec.hibernated else effective.min_instances
        function = aws.lambda_.Function(
            f"{name}-function",
            name=spec.name,
            package_type="Image",
            image_uri=spec.image,
            role=role.arn,
            memory_size=spec.resources.memory_bytes // 2**20,
            timeout=effective.timeout,
            # 0 reserved concurrency throttles every invocation: the hibernated state.
            reserved_concurrent_executions=0 if spec.hibernated else effective.max_instances,
            publish=provisioned > 0,
            ephemeral_storage={"size": storage},
            environment={"variables": _lambda_environment(spec)},
            logging_config={"log_format": "JSON", "log_group": log_group.name},
            region=region,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy, log_group]),
        )
        qualifier: pulumi.Input[str] | None = None
        if provisioned:
            alias = aws.lambda_.Alias(
                f"{name}-alias",
                name="live",
                function_name=function.name,
                function_version=function.version,
                region=region,
                opts=child,
            )
            aws.lambda_.ProvisionedConcurrencyConfig(
                f"{name}-provisioned-concurrency",
                function_name=function.name,
                qualifier=alias.name,
                provisioned_concurrent_executions=provisioned,
                region=region,
                opts=child,
            )
            qualifier = alias.name
        auth = "NONE" if spec.public_endpoint else "AWS_IAM"
        url = aws.lambda_.FunctionUrl(
            f"{name}-url",
            function_name=function.name,
            qualifier=qualifier,
            authorization_type=auth,
            invoke_mode="BUFFERED",
            region=region,
            opts=child,
        )
        if spec.public_endpoint:
            _url_permissions(f"{name}-public", "*", auth, function.name, qualifier, region, child)
        else:
            for index, principal in enumerate(invokers):
                _url_permissions(
                    f"{name}-invoker-{index}",
                    principal,
                    auth,
                    function.name,
                    qualifier,
                    region,
                    child,
                )
        self.endpoint_url = url.function_url
        self.region = function.region
        self.warnings = pulumi.Output.from_input(warnings)
        self.register_outputs(
            {"endpoint_url": self.endpoint_url, "region": self.region, "warnings": self.warnings}
        )
