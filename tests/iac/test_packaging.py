"""aideploy_iac as a package: imports without cloud SDKs, and as a multi-language component
package whose schema Pulumi infers from the type annotations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pulumi.provider.experimental.analyzer import Analyzer, PropertyType

from aideploy_iac.package import PACKAGE_COMPONENTS, PACKAGE_NAME

PACKAGE_DIR = Path(__file__).parents[2] / "aideploy_iac"
CLOUD_SDKS = ("pulumi_aws", "pulumi_gcp", "pulumi_azure_native")


def _non_cloud_modules() -> list[str]:
    """Every module of the package except the ones that exist to use a cloud SDK."""
    modules = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        modules.append(".".join(relative.parts).removesuffix(".__init__"))
    return modules


def test_imports_without_any_cloud_sdk() -> None:
    """Cloud SDKs are imported only inside the components that need them."""
    modules = _non_cloud_modules()
    assert "aideploy_iac.serverless.aws" in modules, "the cloud components import lazily too"
    script = f"""
import importlib, importlib.abc, sys

class BlockCloudSdks(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {CLOUD_SDKS!r}:
            raise ImportError(f"{{name}} is blocked: aideploy_iac must not import it at import time")
        return None

sys.meta_path.insert(0, BlockCloudSdks())
import aideploy_iac
for name in aideploy_iac.__all__:
    getattr(aideploy_iac, name)
for module in {modules!r}:
    importlib.import_module(module)
loaded = sorted(name for name in sys.modules if name.split(".")[0] in {CLOUD_SDKS!r})
assert not loaded, loaded
print("ok", len({modules!r}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("ok")


def test_the_block_is_real() -> None:
    """The subprocess above would notice an import: constructing a Lambda deployment fails."""
    script = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {CLOUD_SDKS!r}:
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
import pulumi
from aideploy_iac.synth import synthesize
from aideploy_iac import LambdaModelDeployment
synthesize(lambda: LambdaModelDeployment("m", {{"model_uri": "s3://b/k", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/r:1"}}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode != 0
    assert "blocked pulumi_aws" in completed.stderr


def test_component_schema_is_inferred() -> None:
    result = Analyzer(PACKAGE_NAME).analyze(PACKAGE_COMPONENTS)
    components = result["component_definitions"]
    assert set(components) == {"ModelDeployment", "AwsPlatform", "GcpPlatform", "AzurePlatform"}
    deployment = components["ModelDeployment"]
    assert deployment.description
    assert "model deployment" in deployment.description.lower()
    inputs = deployment.inputs
    assert not inputs["modelUri"].optional
    assert not inputs["image"].optional
    assert (
        inputs["resourceRequirements"].ref
        == f"#/types/{PACKAGE_NAME}:index:ResourceRequirementsArgs"
    )
    assert inputs["target"].optional
    assert inputs["hibernated"].type is PropertyType.BOOLEAN
    outputs = deployment.outputs
    for name in (
        "endpointUrl",
        "warnings",
        "effectiveMinInstances",
        "placementChoice",
        "placementRunnerUp",
    ):
        assert name in outputs
        assert outputs[name].description, f"{name} has a description"
    assert outputs["warnings"].type is PropertyType.ARRAY
    assert outputs["placementChoice"].optional
    types = result["type_definitions"]
    assert [member.value for member in types["DeploymentType"].enum or []] == [
        "kubernetes",
        "serverless",
    ]
    scaling = types["ScalingPolicyArgs"]
    assert set(scaling.properties) == {"minInstances", "maxInstances", "targetCpuUtilization"}
    assert scaling.properties["minInstances"].description
    assert (
        components["AzurePlatform"].outputs["containerAppsEnvironmentId"].type
        is PropertyType.STRING
    )


def test_plugin_manifest_runs_the_package_host() -> None:
    manifest = (PACKAGE_DIR.parent / "PulumiPlugin.yaml").read_text()
    assert "name: python" in manifest
    main = (PACKAGE_DIR / "__main__.py").read_text()
    assert "component_provider_host" in main
