"""Arguments shared by the per-cloud platform components."""

from typing import NotRequired, TypedDict

__all__ = ["PlatformArgs"]


class PlatformArgs(TypedDict):
    """Shared infrastructure of one cloud region."""

    region: str
    """Cloud region of every resource."""
    on_demand_node_type: NotRequired[str]
    """Instance type of the on-demand (system) node pool."""
    on_demand_nodes: NotRequired[int]
    """Nodes in the on-demand pool (default 2; it also runs KEDA)."""
    spot_node_types: NotRequired[list[str]]
    """Instance types of the spot pool (several raise the odds of spot capacity)."""
    max_spot_nodes: NotRequired[int]
    """Most nodes the spot pool autoscales to (default 10; it starts at 0)."""
    kubernetes_version: NotRequired[str]
    """Kubernetes version; default the cloud's current default."""
    keda_chart_version: NotRequired[str]
    """Version of the kedacore/keda Helm chart."""
    http_add_on_chart_version: NotRequired[str]
    """Version of the kedacore/keda-add-ons-http Helm chart."""
    project: NotRequired[str]
    """GCP only: the project (default: the provider's project)."""
