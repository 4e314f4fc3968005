"""``AwsPlatform``: S3 artifact bucket, ECR registry and an EKS cluster with a spot node group,
KEDA and the EKS Pod Identity agent."""

import json
from typing import Any

import pulumi

from aideploy_iac.platform.args import PlatformArgs
from aideploy_iac.platform.keda import Keda, keda_args
from aideploy_iac.platform.kubeconfig import exec_kubeconfig, kubernetes_provider

__all__ = ["AwsPlatform"]

_EKS_NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
)


def _assume_role(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
            ],
        }
    )


class AwsPlatform(pulumi.ComponentResource):
    """What aideploy deployments on AWS share in one region."""

    artifact_bucket: pulumi.Output[str]
    """S3 bucket for model artifacts."""
    registry_url: pulumi.Output[str]
    """ECR repository URL for the serving image (Lambda runs images only from ECR)."""
    cluster_name: pulumi.Output[str]
    """EKS cluster name (deployments make their pod identity associations in it)."""
    kubeconfig: pulumi.Output[str]
    """Kubeconfig of the cluster (secret), authenticating with `aws eks get-token`."""

    def __init__(
        self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aideploy:index:AwsPlatform", name, None, opts)
        import pulumi_aws as aws

        region = args["region"]
        child = pulumi.ResourceOptions(parent=self)
        tags = {"managed-by": "aideploy", "aideploy-platform": name}
        bucket = aws.s3.Bucket(
            f"{name}-artifacts", region=region, force_destroy=False, tags=tags, opts=child
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-artifacts-private",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            region=region,
            opts=child,
        )
        registry = aws.ecr.Repository(
            f"{name}-registry",
            image_scanning_configuration={"scan_on_push": True},
            image_tag_mutability="IMMUTABLE",
            region=region,
            tags=tags,
            opts=child,
        )
        vpc = aws.ec2.Vpc(
            f"{name}-network",
            cidr_block="10.42.0.0/16",
            enable_dns_hostnames=True,
            enable_dns_support=True,
            region=region,
            tags=tags,
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-gateway", vpc_id=vpc.id, region=region, tags=tags, opts=child
        )
        routes = aws.ec2.RouteTable(
            f"{name}-routes",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
            region=region,
            tags=tags,
            opts=child,
        )
        subnets = []
        for index, zone in enumerate(("a", "b")):
            subnet = aws.ec2.Subnet(
                f"{name}-subnet-{zone}",
                vpc_id=vpc.id,
                cidr_block=f"10.42.{index * 16}.0/20",
                availability_zone=f"{region}{zone}",
                map_public_ip_on_launch=True,
                region=region,
                tags={**tags, "kubernetes.io/role/elb": "1"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-subnet-{zone}-routes",
                subnet_id=subnet.id,
                route_table_id=routes.id,
                region=region,
                opts=child,
            )
            subnets.append(subnet)
        cluster_role = aws.iam.Role(
            f"{name}-cluster-role",
            assume_role_policy=_assume_role("eks.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        cluster_policy = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=cluster_role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",
            opts=child,
        )
        cluster_args: dict[str, Any] = {}
        if "kubernetes_version" in args:
            cluster_args["version"] = args["kubernetes_version"]
        cluster = aws.eks.Cluster(
            f"{name}-cluster",
            role_arn=cluster_role.arn,
            vpc_config={"subnet_ids": [subnet.id for subnet in subnets]},
            access_config={
                "authentication_mode": "API",
                "bootstrap_cluster_creator_admin_permissions": True,
            },
            region=region,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster_policy]),
            **cluster_args,
        )
        node_role = aws.iam.Role(
            f"{name}-node-role",
            assume_role_policy=_assume_role("ec2.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-policy-{index}", role=node_role.name, policy_arn=arn, opts=child
            )
            for index, arn in enumerate(_EKS_NODE_POLICIES)
        ]
        node_opts = pulumi.ResourceOptions(parent=self, depends_on=attachments)
        on_demand_nodes = args.get("on_demand_nodes", 2)
        system_nodes = aws.eks.NodeGroup(
            f"{name}-on-demand-nodes",
            cluster_name=cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=[subnet.id for subnet in subnets],
            capacity_type="ON_DEMAND",
            instance_types=[args.get("on_demand_node_type", "m6i.large")],
            scaling_config={
                "min_size": on_demand_nodes,
                "desired_size": on_demand_nodes,
                "max_size": max(on_demand_nodes, 1) * 3,
            },
            region=region,
            tags=tags,
            opts=node_opts,
        )
        # EKS labels these nodes eks.amazonaws.com/capacityType=SPOT; deployments prefer them.
        aws.eks.NodeGroup(
            f"{name}-spot-nodes",
            cluster_name=cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=[subnet.id for subnet in subnets],
            capacity_type="SPOT",
            instance_types=args.get(
                "spot_node_types", ["m6i.large", "m5.large", "m6a.large", "c6i.xlarge"]
            ),
            scaling_config={
                "min_size": 0,
                "desired_size": 0,
                "max_size": args.get("max_spot_nodes", 10),
            },
            region=region,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=attachments, ignore_changes=["scalingConfig.desiredSize"]
            ),
        )
        # Deployments on this cluster get an IAM role per deployment through EKS Pod Identity
        # (aideploy_iac.kubernetes.identity); the agent add-on hands pods their credentials.
        aws.eks.Addon(
            f"{name}-pod-identity-agent",
            cluster_name=cluster.name,
            addon_name="eks-pod-identity-agent",
            region=region,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[system_nodes]),
        )
        # Read nested fields through the typed property: Output.all hands back plain dicts.
        certificate = cluster.certificate_authority.apply(lambda authority: authority.data)
        kubeconfig = pulumi.Output.all(cluster.name, cluster.endpoint, certificate).apply(
            lambda values: exec_kubeconfig(
                cluster=values[0],
                server=values[1],
                certificate_authority=values[2],
                command="aws",
                command_args=["eks", "get-token", "--cluster-name", values[0], "--region", region],
            )
        )
        provider = kubernetes_provider(
            f"{name}-kubernetes", kubeconfig, self, depends_on=[system_nodes]
        )
        Keda(
            f"{name}-keda",
            keda_args(args),
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        self.artifact_bucket = bucket.bucket
        self.registry_url = registry.repository_url
        self.cluster_name = cluster.name
        self.kubeconfig = pulumi.Output.secret(kubeconfig)
        self.register_outputs(
            {
                "artifact_bucket": self.artifact_bucket,
                "registry_url": self.registry_url,
                "cluster_name": self.cluster_name,
                "kubeconfig": self.kubeconfig,
            }
        )
