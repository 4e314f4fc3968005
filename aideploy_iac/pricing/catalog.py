"""The price catalog: a versioned data file of cloud list prices, each with its source and date.

``catalog.json`` beside this module is the data; :func:`load_catalog` reads and validates it into
typed models. Multi-cloud placement and the analytics cost reports both read prices only through
these models, so refreshing the file updates both.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator

from aideploy.errors import InputError
from aideploy.schema import Cloud, field_errors

__all__ = [
    "CatalogError",
    "CloudPrices",
    "ManagedEndpointPrices",
    "ManagedInstance",
    "NodeType",
    "Price",
    "PriceCatalog",
    "RegionPrices",
    "ServerlessPrices",
    "load_catalog",
]

NonNegative = Annotated[float, Field(ge=0)]


class CatalogError(InputError):
    """A price catalog file that is missing or does not match the catalog format."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Frozen):
    """One unit price, with where and when it was read, and whether it is a list price or an
    estimate derived from one (spot prices move with capacity and are not published as one)."""

    value: NonNegative
    source: HttpUrl
    read_on: date
    basis: Literal["list_price", "estimate"] = "list_price"
    derivation: str | None = None
    """How an estimate was made, e.g. ``"40% of on_demand_hourly"``."""

    @model_validator(mode="after")
    def _estimates_say_how(self) -> Self:
        if (self.basis == "estimate") != (self.derivation is not None):
            raise ValueError("an estimate, and only an estimate, carries its derivation")
        return self


class ServerlessPrices(_Frozen):
    """The cloud's serverless container product; per-second prices are per instance."""

    product: str
    vcpu_second: Price | None
    """Per vCPU-second while handling requests; ``None`` where CPU is not billed separately (Lambda)."""
    gib_second: Price
    """Per GiB-second of memory while handling requests."""
    idle_vcpu_second: Price | None
    """Per vCPU-second of a kept-warm idle instance (min instances)."""
    idle_gib_second: Price | None
    """Per GiB-second of a kept-warm idle instance (Lambda: provisioned concurrency)."""
    million_requests: Price


class NodeType(_Frozen):
    """A Kubernetes worker node instance type."""

    instance_type: str
    vcpu: Annotated[float, Field(gt=0)]
    memory_gib: Annotated[float, Field(gt=0)]
    gpu: Annotated[int, Field(ge=0)]
    on_demand_hourly: Price
    spot_hourly: Price
    """A typical spot price, an estimate (``basis``) since real spot prices move with capacity."""


class ManagedInstance(_Frozen):
    instance_type: str
    vcpu: Annotated[float, Field(gt=0)]
    memory_gib: Annotated[float, Field(gt=0)]
    gpu: Annotated[int, Field(ge=0)]
    hourly: Price


class ManagedEndpointPrices(_Frozen):
    """The cloud's managed ML endpoint (SageMaker, Vertex AI, Azure ML), for comparison."""

    product: str
    instances: Annotated[list[ManagedInstance], Field(min_length=1)]


class RegionPrices(_Frozen):
    serverless: ServerlessPrices
    nodes: Annotated[list[NodeType], Field(min_length=1)]
    object_storage_gib_month: Price
    egress_gib: Price
    """Internet egress per GiB (first pricing tier)."""
    managed_endpoint: ManagedEndpointPrices


class CloudPrices(_Frozen):
    kubernetes_control_plane_hourly: Price
    regions: Annotated[dict[str, RegionPrices], Field(min_length=2)]


class PriceCatalog(_Frozen):
    version: str
    currency: str
    read_on: date
    note: str
    clouds: dict[Cloud, CloudPrices]

    def region(self, cloud: Cloud, region: str) -> RegionPrices:
        """The prices of one region; InputError naming the catalogued choices otherwise."""
        cloud_prices = self.clouds.get(cloud)
        if cloud_prices is None:
            known = ", ".join(sorted(self.clouds))
            raise InputError(f"target.cloud: {cloud.value!r} has no prices; catalogued: {known}")
        prices = cloud_prices.regions.get(region)
        if prices is None:
            known = ", ".join(sorted(cloud_prices.regions))
            raise InputError(
                f"target.region: {region!r} has no {cloud.value} prices in catalog "
                f"{self.version}; catalogued: {known}"
            )
        return prices

    def places(self) -> list[tuple[Cloud, str]]:
        """Every catalogued (cloud, region), in a stable order."""
        return [
            (cloud, region)
            for cloud in sorted(self.clouds)
            for region in sorted(self.clouds[cloud].regions)
        ]


def _read(path: Path | None) -> str:
    if path is None:
        return resources.files("aideploy_iac.pricing").joinpath("catalog.json").read_text("utf-8")
    try:
        return path.read_text("utf-8")
    except OSError as exc:
        raise CatalogError(f"price catalog {path}: {exc.strerror}") from None


@cache
def _load_cached(path: Path | None) -> PriceCatalog:
    try:
        return PriceCatalog.model_validate_json(_read(path))
    except ValidationError as exc:
        problems = "; ".join(f"{e.field}: {e.message}" for e in field_errors(exc)[:5])
        raise CatalogError(f"price catalog {path or 'catalog.json'}: {problems}") from None


def load_catalog(path: Path | None = None) -> PriceCatalog:
    """The packaged catalog, or the file at ``path``; validated once and cached per path."""
    return _load_cached(None if path is None else path.resolve())
