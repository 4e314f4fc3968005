"""Shared per-cloud infrastructure deployments run on: artifact bucket, registry, cluster, KEDA.

Each cloud's component imports its provider SDK only when it is constructed.
"""

from aideploy_iac.platform.args import PlatformArgs
from aideploy_iac.platform.aws import AwsPlatform
from aideploy_iac.platform.azure import AzurePlatform
from aideploy_iac.platform.gcp import GcpPlatform
from aideploy_iac.platform.keda import Keda, KedaArgs

__all__ = ["AwsPlatform", "AzurePlatform", "GcpPlatform", "Keda", "KedaArgs", "PlatformArgs"]
