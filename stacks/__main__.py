"""Entry point of the root Pulumi project (``Pulumi.yaml``: ``main: stacks/``)."""

from __future__ import annotations

from stacks.config import Program, load_deployments_config, load_platform_config, load_program
from stacks.programs import deployments, platform

if load_program() is Program.PLATFORM:
    platform(load_platform_config())
else:
    deployments(load_deployments_config())
