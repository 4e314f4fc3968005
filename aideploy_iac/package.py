"""What ``aideploy_iac`` publishes as a multi-language Pulumi component package, and its host."""

from __future__ import annotations

import pulumi

from aideploy_iac.deployment import ModelDeployment
from aideploy_iac.platform import AwsPlatform, AzurePlatform, GcpPlatform

__all__ = ["PACKAGE_COMPONENTS", "PACKAGE_NAME", "serve"]

PACKAGE_NAME = "aideploy"
PACKAGE_COMPONENTS: list[type[pulumi.ComponentResource]] = [
    ModelDeployment,
    AwsPlatform,
    GcpPlatform,
    AzurePlatform,
]
"""The public components; the per-target ones stay Python-only building blocks."""


def serve() -> None:
    """Run the component provider: Pulumi's engine starts it with its address as argument,
    reads the port it prints, and asks it for the schema inferred from the components."""
    from pulumi.provider.experimental import component_provider_host

    from aideploy import __version__

    component_provider_host(components=PACKAGE_COMPONENTS, name=PACKAGE_NAME, version=__version__)
