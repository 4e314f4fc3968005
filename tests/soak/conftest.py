"""The soak suite reuses the hardening fixtures (a live API process)."""

from tests.hardening.conftest import live_api

__all__ = ["live_api"]
