"""Fixtures of the analytics tests: the packaged price catalog and default regions."""

from __future__ import annotations

import pytest

from aideploy.schema import Cloud
from aideploy_iac.pricing import PriceCatalog, load_catalog
from api.analytics.cost import PricingOptions


@pytest.fixture(scope="session")
def catalog() -> PriceCatalog:
    return load_catalog()


@pytest.fixture(scope="session")
def pricing(catalog: PriceCatalog) -> PricingOptions:
    return PricingOptions(
        catalog=catalog,
        regions={Cloud.AWS: "us-east-1", Cloud.GCP: "us-central1", Cloud.AZURE: "eastus"},
    )


# The HTTP API fixtures (app on SQLite and PostgreSQL, users, tokens) are the API suite's own.
from tests.api.conftest import (  # noqa: E402, F401
    alice,
    api,
    bob,
    client,
    context,
    database_url,
    postgres_database,
    runners,
    settings,
)
