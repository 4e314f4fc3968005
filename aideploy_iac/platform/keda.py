"""``Keda``: KEDA and its HTTP add-on installed by Helm, for scale-to-zero deployments."""

import re
from typing import NotRequired, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from aideploy.errors import InputError
from aideploy_iac.platform.args import PlatformArgs

__all__ = [
    "DEFAULT_HTTP_ADD_ON_CHART_VERSION",
    "DEFAULT_KEDA_CHART_VERSION",
    "HTTP_ADD_ON_CRD_COMMIT",
    "MIN_HTTP_ADD_ON_CHART_VERSION",
    "Keda",
    "KedaArgs",
    "keda_args",
]

KEDA_CHART_REPOSITORY = "https://kedacore.github.io/charts"
DEFAULT_KEDA_CHART_VERSION = "2.17.2"
DEFAULT_HTTP_ADD_ON_CHART_VERSION = "0.16.0"
HTTP_ADD_ON_CRD_COMMIT = "59b2f6a115ad735a108d830f4d525f8462497c7d"
"""The kedacore/http-add-on commit whose HTTPScaledObject CRD the tests validate against
(``../shared/schemas/crds/SOURCES.md``). The keda-add-ons-http chart of the default version
ships that CRD unchanged; bump both together."""
MIN_HTTP_ADD_ON_CHART_VERSION = (0, 11, 0)
"""Rendered HTTPScaledObjects set ``spec.timeouts``, which the add-on supports from 0.11.0
(older CRDs prune it, so long requests would hit the interceptor's global timeout)."""
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


def _checked_http_add_on_version(version: str) -> str:
    match = _VERSION.match(version)
    lowest = ".".join(map(str, MIN_HTTP_ADD_ON_CHART_VERSION))
    if match is None:
        raise InputError(f"http_add_on_chart_version: {version!r} is not a version like 0.16.0")
    if tuple(int(part) for part in match.groups()) < MIN_HTTP_ADD_ON_CHART_VERSION:
        raise InputError(
            f"http_add_on_chart_version: {version} is too old; allowed: {lowest} or later "
            "(deployments set HTTPScaledObject spec.timeouts, added in 0.11.0)"
        )
    return version


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
        http_add_on_version = _checked_http_add_on_version(
            args.get("http_add_on_chart_version", DEFAULT_HTTP_ADD_ON_CHART_VERSION)
        )
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
            version=http_add_on_version,
            repository_opts={"repo": KEDA_CHART_REPOSITORY},
            namespace=namespace,
            atomic=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[keda]),
        )
        self.namespace = pulumi.Output.from_input(namespace)
        self.register_outputs({"namespace": self.namespace})
