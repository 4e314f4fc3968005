"""Schemathesis against a live API's own OpenAPI document: every operation, valid and invalid
inputs, authenticated; no 5xx and every response as documented (status, content type, body)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import hypothesis.strategies as st
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aideploy.settings import Settings
from api.analytics.tokens import usage_token
from api.auth.tokens import load_signing_key
from tests.hardening.live import LiveApi, upload_model

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class FuzzReport:
    """What ran: cases per operation and the status codes seen."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    """(operation, status) of every case."""
    failures: dict[str, str] = field(default_factory=dict)

    def answered(self, label: str) -> set[int]:
        """The statuses ``label`` (``"PUT /deployments/{deployment_id}"``) answered."""
        return {status for (operation, status) in self.answers if operation == label}

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def describe_failures(self) -> str:
        return "\n\n".join(f"== {label}\n{text}" for label, text in self.failures.items())


def fuzz(
    api: LiveApi,
    headers: dict[str, str],
    examples_per_operation: int,
    *,
    derandomize: bool = False,
    known_ids: dict[str, str] | None = None,
    headers_for: dict[str, dict[str, str]] | None = None,
) -> FuzzReport:
    """Run every operation about ``examples_per_operation`` times (valid and invalid inputs);
    an operation's first failing check (shrunk by hypothesis) lands in ``failures``.
    ``derandomize`` makes the cases the same on every run (the short run in ``make test``); the
    soak run explores new ones each time. ``known_ids`` (path parameter name -> an existing
    resource's id) adds as many cases again on the real resources; ``headers_for`` (operation
    label -> headers) replaces ``headers`` for one operation (the usage route's own token).
    Deleting operations run last, so the others find the real resources still there."""
    schema = schemathesis.openapi.from_url(f"{api.url}/schema/openapi.json")
    report = FuzzReport()
    session = requests.Session()
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
    for operation in operations:
        path_names = {parameter.name for parameter in operation.path_parameters}
        known = {name: value for name, value in (known_ids or {}).items() if name in path_names}
        groups = [{}, known] if known else [{}]
        sent = (headers_for or {}).get(operation.label, headers)
        for path_parameters in groups:
            cases = st.one_of(
                [
                    operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
                    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                ]
            )
            run = _test_for(operation.label, cases, examples_per_operation, derandomize)
            try:
                run(api, session, sent, report)
            except (Exception, FailureGroup) as failure:  # every operation runs; all reported
                report.failures[operation.label] = str(failure)
    return report


def _test_for(
    label: str, cases: st.SearchStrategy[Any], examples: int, derandomize: bool
) -> Callable[[LiveApi, requests.Session, dict[str, str], FuzzReport], None]:
    """One operation's hypothesis test: send each case, count it, check the response."""

    @hypothesis.given(case=cases)
    @hypothesis.settings(
        max_examples=examples,
        derandomize=derandomize,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )
    def run(
        api: LiveApi,
        session: requests.Session,
        headers: dict[str, str],
        report: FuzzReport,
        case: Any,
    ) -> None:
        response = case.call(base_url=api.url, session=session, headers=headers, timeout=60)
        report.cases[label] += 1
        report.statuses[response.status_code] += 1
        report.answers[(label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    return run


USAGE = "POST /deployments/{deployment_id}/usage"
BY_DEPLOYMENT_ID = [
    "GET /deployments/{deployment_id}",
    "PUT /deployments/{deployment_id}",
    "POST /deployments/{deployment_id}/hibernate",
    "POST /deployments/{deployment_id}/activate",
    "GET /deployments/{deployment_id}/events",
    "DELETE /deployments/{deployment_id}",
]


@dataclass
class RealResources:
    """A model and a running local deployment on the live API, for the fuzzer to reach."""

    known_ids: dict[str, str]
    headers_for: dict[str, dict[str, str]]


def real_resources(api: LiveApi, headers: dict[str, str], model: Path) -> RealResources:
    """Upload ``model``, deploy it locally and wait until it is active; the usage route gets
    that deployment's own usage token (what its serving process sends)."""
    model_id = upload_model(api, headers, model)
    created = httpx.post(
        f"{api.url}/deployments",
        headers=headers,
        json={
            "name": "fuzzed",
            "model_id": model_id,
            "deployment_type": "serverless",
            "scaling_policy": {"min_instances": 0, "max_instances": 1},
            "target": {"cloud": "local"},
        },
    )
    assert created.status_code == 202, created.text
    deployment_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while (status := _status(api, headers, deployment_id)) == "creating":
        assert time.monotonic() < deadline, "the deployment did not become active"
        time.sleep(0.2)
    assert status == "active", status
    key = load_signing_key(Settings(data_dir=api.data_dir))
    token = usage_token(key, deployment_id)
    return RealResources(
        known_ids={"model_id": model_id, "deployment_id": deployment_id},
        headers_for={USAGE: {"Authorization": f"Bearer {token}"}},
    )


def _status(api: LiveApi, headers: dict[str, str], deployment_id: str) -> str:
    response = httpx.get(f"{api.url}/deployments/{deployment_id}", headers=headers)
    response.raise_for_status()
    return str(response.json()["status"])


def fuzz_the_live_api(
    api: LiveApi, model: Path, examples_per_operation: int, *, derandomize: bool
) -> FuzzReport:
    """The whole fuzz run of a test: ``model`` uploaded and deployed (:func:`real_resources`),
    every operation fuzzed against them, the tally printed; asserts that nothing failed and
    that the operations by deployment id and the usage route reached the real deployment."""
    headers = api.headers()
    real = real_resources(api, headers, model)
    report = fuzz(
        api,
        headers,
        examples_per_operation,
        known_ids=real.known_ids,
        headers_for=real.headers_for,
        derandomize=derandomize,
    )
    print(f"\nfuzzing: {report.total} cases over {len(report.cases)} operations; {report.statuses}")
    assert not report.failures, report.describe_failures()
    # Operations by deployment id answered about the real deployment (not only 404), and the
    # usage route took its token (not only 401), so their bodies were parsed.
    for label in BY_DEPLOYMENT_ID:
        assert report.answered(label) - {404, 422}, f"{label}: {report.answered(label)}"
    assert report.answered(USAGE) - {401}, f"{USAGE}: {report.answered(USAGE)}"
    return report
