"""Host ``aideploy_iac`` as a Pulumi component package (see ``PulumiPlugin.yaml``).

YAML, TypeScript, Go and .NET programs then use ``aideploy:index:ModelDeployment`` and the
platform components; their schema is inferred from the components' type annotations.
"""

from pulumi.provider.experimental import component_provider_host

from aideploy import __version__
from aideploy_iac.package import PACKAGE_COMPONENTS, PACKAGE_NAME

if __name__ == "__main__":
    component_provider_host(components=PACKAGE_COMPONENTS, name=PACKAGE_NAME, version=__version__)
