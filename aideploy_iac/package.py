"""What ``aideploy_iac`` publishes as a multi-language Pulumi component package."""

from __future__ import annotations

import pulumi

from aideploy_iac.deployment import ModelDeployment
from aideploy_iac.platform import AwsPlatform, AzurePlatform, GcpPlatform

__all__ = ["PACKAGE_COMPONENTS", "PACKAGE_NAME"]

PACKAGE_NAME = "aideploy"
PACKAGE_COMPONENTS: list[type[pulumi.ComponentResource]] = [
    ModelDeployment,
    AwsPlatform,
    GcpPlatform,
    AzurePlatform,
]
"""The public components; the per-target ones stay Python-only building blocks."""
