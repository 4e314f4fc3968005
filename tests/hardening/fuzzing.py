"""Schemathesis against a live API's own OpenAPI document: every operation, valid and invalid
inputs, authenticated; no 5xx and every response as documented (status, content type, body)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

from tests.hardening.live import LiveApi

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
    failures: dict[str, str] = field(default_factory=dict)

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
) -> FuzzReport:
    """Run every operation about ``examples_per_operation`` times (valid and invalid inputs);
    an operation's first failing check (shrunk by hypothesis) lands in ``failures``.
    ``derandomize`` makes the cases the same on every run (the short run in ``make test``); the
    soak run explores new ones each time. ``known_ids`` (path parameter name ->
    an existing resource's id) makes part of the cases reach real resources."""
    schema = schemathesis.openapi.from_url(f"{api.url}/schema/openapi.json")
    report = FuzzReport()
    session = requests.Session()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        strategies: list[st.SearchStrategy[Any]] = [
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        ]
        path_names = {parameter.name for parameter in operation.path_parameters}
        known = {name: value for name, value in (known_ids or {}).items() if name in path_names}
        if known:
            strategies.append(operation.as_strategy(path_parameters=known))
        run = _test_for(operation.label, st.one_of(strategies), examples_per_operation, derandomize)
        try:
            run(api, session, headers, report)
        except (Exception, FailureGroup) as failure:  # every operation runs; all are reported
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
        case.validate_response(response, checks=CHECKS, headers=headers)

    return run
