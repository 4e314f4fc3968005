"""``Keda``: KEDA and its HTTP add-on installed by Helm, for scale-to-zero deployments."""

from typing import NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from aideploy_iac.platform.args import PlatformArgs

__all__ = [
    "DEFAULT_HTTP_ADD_ON_CHART_VERSION",
    "DEFAULT_KEDA_CHART_VERSION",
    "Keda",
    "KedaArgs",
    "keda_args",
]

KEDA_CHART_REPOSITORY = "https://kedacore.github.io/charts"
DEFAULT_KEDA_CHART_VERSION = "2.17.2"
DEFAULT_HTTP_ADD_ON_CHART_VERSION = "0.10.0"


class KedaArgs(TypedDict):
    """Where and which versions of KEDA to install."""

    namespace: NotRequired[str]
    """Namespace for KEDA and the HTTP add-on (default "keda"; deployments expect it)."""
    keda_chart_version: NotRequired[str]
    """kedacore/keda chart version."""
    http_add_on_chart_version: NotRequired[str]
    """kedacore/keda-add-ons-http chart version."""


def keda_args(platform: PlatformArgs) -> KedaArgs:
    """The KEDA settings of a platform's args."""
    args: KedaArgs = {}
    if "keda_chart_version" in platform:
        args["keda_chart_version"] = platform["keda_chart_version"]
    if "http_add_on_chart_version" in platform:
        args["http_add_on_chart_version"] = platform["http_add_on_chart_version"]
    return args


class Keda(pulumi.ComponentResource):
    """KEDA (autoscaling to zero) and its HTTP add-on (wakes deployments on requests)."""

    namespace: pulumi.Output[str]
    """Namespace KEDA runs in."""

    def __init__(
        self, name: str, args: KedaArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("aideploy:index:Keda", name, None, opts)
        namespace = args.get("namespace", "keda")
        keda = k8s.helm.v3.Release(
            f"{name}-keda",
            name="keda",
            chart="keda",
            version=args.get("keda_chart_version", DEFAULT_KEDA_CHART_VERSION),
            repository_opts={"repo": KEDA_CHART_REPOSITORY},
            namespace=namespace,
            create_namespace=True,
            atomic=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        k8s.helm.v3.Release(
            f"{name}-http-add-on",
            name="keda-add-ons-http",
            chart="keda-add-ons-http",
            version=args.get("http_add_on_chart_version", DEFAULT_HTTP_ADD_ON_CHART_VERSION),
            repository_opts={"repo": KEDA_CHART_REPOSITORY},
            namespace=namespace,
            atomic=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[keda]),
        )
        self.namespace = pulumi.Output.from_input(namespace)
        self.register_outputs({"namespace": self.namespace})
