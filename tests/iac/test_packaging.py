"""aideploy_iac as a package: imports without cloud SDKs, and as a multi-language component
package whose schema Pulumi infers from the type annotations."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grpc
from pulumi.provider.experimental.analyzer import Analyzer, PropertyType
from pulumi.provider.experimental.host import components_from_module
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from aideploy_iac.args import DeploymentArgs
from aideploy_iac.deployment import ModelDeploymentArgs
from aideploy_iac.package import PACKAGE_COMPONENTS, PACKAGE_NAME

ROOT = Path(__file__).parents[2]
PACKAGE_DIR = ROOT / "aideploy_iac"
CLOUD_SDKS = ("pulumi_aws", "pulumi_gcp", "pulumi_azure_native")
PASS_THROUGH_IDS = (
    "environmentId",
    "resourceGroupName",
    "modelStorageAccountId",
    "namespace",
    "project",
    "serviceAccountName",
)


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


def _schema() -> dict[str, Any]:
    return Analyzer(PACKAGE_NAME).analyze(PACKAGE_COMPONENTS)  # type: ignore[return-value]


def test_component_schema_is_inferred() -> None:
    result = _schema()
    components = result["component_definitions"]
    assert set(components) == {"ModelDeployment", "AwsPlatform", "GcpPlatform", "AzurePlatform"}
    deployment = components["ModelDeployment"]
    assert deployment.description
    assert "model deployment" in deployment.description.lower()
    inputs = deployment.inputs
    assert not inputs["image"].optional
    assert inputs["modelUri"].optional, "model_uris may stand in for it"
    assert (
        inputs["resourceRequirements"].ref
        == f"#/types/{PACKAGE_NAME}:index:ResourceRequirementsArgs"
    )
    assert inputs["target"].optional
    assert inputs["hibernated"].type is PropertyType.BOOLEAN
    assert inputs["modelUris"].type is PropertyType.OBJECT
    assert inputs["invokers"].type is PropertyType.ARRAY
    outputs = deployment.outputs
    for name in (
        "endpointUrl",
        "warnings",
        "effectiveMinInstances",
        "placementChoice",
        "placementRunnerUp",
        "region",
    ):
        assert name in outputs
    assert outputs["warnings"].type is PropertyType.ARRAY
    assert outputs["placementChoice"].optional
    types = result["type_definitions"]
    assert [member.value for member in types["DeploymentType"].enum or []] == [
        "kubernetes",
        "serverless",
    ]
    scaling = types["ScalingPolicyArgs"]
    assert set(scaling.properties) == {"minInstances", "maxInstances", "targetCpuUtilization"}
    azure = components["AzurePlatform"].outputs
    for name in ("containerAppsEnvironmentId", "registryId", "oidcIssuerUrl", "storageAccountId"):
        assert azure[name].type is PropertyType.STRING


def test_every_input_and_output_is_described() -> None:
    """Inherited fields too: YAML and TypeScript users see these descriptions in their IDE."""
    result = _schema()
    undescribed = [
        f"{component}.{kind}.{name}"
        for component, definition in result["component_definitions"].items()
        for kind, properties in (("inputs", definition.inputs), ("outputs", definition.outputs))
        for name, prop in properties.items()
        if not prop.description
    ] + [
        f"{type_name}.{name}"
        for type_name, definition in result["type_definitions"].items()
        for name, prop in definition.properties.items()
        if not prop.description
    ]
    assert undescribed == []


def test_pass_through_ids_accept_outputs_of_other_resources() -> None:
    """YAML/TypeScript programs wire platform outputs (${platform.storageAccountId}) into them."""
    inputs = _schema()["component_definitions"]["ModelDeployment"].inputs
    for name in PASS_THROUGH_IDS:
        assert inputs[name].plain is None, f"{name} is a pulumi.Input"
    for name in ("deploymentType", "target", "resourceRequirements", "scalingPolicy"):
        assert inputs[name].plain, f"{name} decides which resources exist: a plain value"


def test_the_schema_offers_only_clouds_a_component_accepts() -> None:
    types = _schema()["type_definitions"]
    target = types["TargetArgs"]
    assert target.properties["cloud"].ref == f"#/types/{PACKAGE_NAME}:index:TargetCloud"
    assert [member.value for member in types["TargetCloud"].enum or []] == ["aws", "gcp", "azure"]
    assert [member.value for member in types["ModelFormat"].enum or []] == ["onnx", "pytorch"]


def test_model_deployment_args_keep_the_shared_fields_in_step() -> None:
    """ModelDeploymentArgs declares the shared fields itself (the analyzer documents only a
    class's own fields); each must match DeploymentArgs in type and description."""
    shared = inspect.get_annotations(DeploymentArgs)
    declared = inspect.get_annotations(ModelDeploymentArgs)
    analyzer = Analyzer(PACKAGE_NAME)
    for name, annotation in shared.items():
        if name == "model_uri":  # optional here: model_uris may stand in for it
            continue
        assert declared[name] == annotation, name
        assert (name in ModelDeploymentArgs.__required_keys__) == (
            name in DeploymentArgs.__required_keys__
        ), name
        assert analyzer.get_docstring(ModelDeploymentArgs, name) == analyzer.get_docstring(
            DeploymentArgs, name
        ), name
    assert "ModelDeploymentArgs(TypedDict)" in inspect.getsource(ModelDeploymentArgs)


def _plugin_command(root: Path) -> list[str]:
    """What Pulumi's Python language host runs for the source plugin at ``root``
    (pulumi-language-python's RunPlugin): ``python <root>`` when ``<root>/__main__.py`` exists,
    otherwise ``python -m pulumi.run.plugin <pyproject project name>``."""
    if (root / "__main__.py").is_file():
        return [sys.executable, str(root)]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"]
    return [sys.executable, "-m", "pulumi.run.plugin", project]


def test_the_plugin_entry_runs_the_component_provider() -> None:
    """Start the package the way Pulumi does and ask it for its schema over gRPC."""
    manifest = (ROOT / "PulumiPlugin.yaml").read_text()
    assert "name: python" in manifest
    command = _plugin_command(ROOT)
    assert command == [sys.executable, str(ROOT)], "the root __main__.py is the entry"
    # The language host's other route would find no components in the distribution's module.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert components_from_module(importlib.import_module(project)) == []
    engine = "127.0.0.1:1"  # GetSchema never calls the engine
    process = subprocess.Popen(
        [*command, engine], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        assert port.isdigit(), process.stderr.read() if process.stderr else port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            provider = provider_pb2_grpc.ResourceProviderStub(channel)
            answer = provider.GetSchema(provider_pb2.GetSchemaRequest(version=0), timeout=120)
    finally:
        process.kill()
        process.wait(timeout=30)
    schema = json.loads(answer.schema)
    assert schema["name"] == PACKAGE_NAME
    assert schema["resources"]["aideploy:index:ModelDeployment"]["isComponent"] is True
    assert set(schema["resources"]) == {
        f"{PACKAGE_NAME}:index:{component.__name__}" for component in PACKAGE_COMPONENTS
    }
