"""IaC benchmark: the cost of a large stack program, building N = 1, 100, 1000 deployments with
``stacks.programs.deployments`` under Pulumi's mock engine (``aideploy_iac.synth``).

The deployments cycle through the four targets with their policies on (Kubernetes with spot,
an on-demand floor and KEDA scale-to-zero; Lambda; Cloud Run; Container Apps), so every
component and builder is exercised. Bars from the issue: growth is linear (the time per
deployment at the largest N stays within 2x of the time at 100) and 1000 deployments take
under 60 s. Prints a rich table and writes ``benchmarks/results/iac.json``.

Run: ``make bench-iac`` or ``python benchmarks/iac.py [--sizes 1 100 1000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results" / "iac.json"
LARGEST_ALLOWED_SECONDS = 60.0
LINEAR_TOLERANCE = 2.0
console = Console(width=None if sys.stdout.isatty() else 160)

_TARGETS: list[dict[str, Any]] = [
    {
        "model_uri": "s3://acme-models/kubernetes/model.onnx",
        "deployment_type": "kubernetes",
        "target": {"cloud": "aws", "region": "us-east-1"},
        "scaling_policy": {"min_instances": 2, "max_instances": 8},
        "cost_optimization_policy": {
            "use_spot_instances": True,
            "on_demand_base_instances": 1,
            "hibernation_enabled": True,
        },
    },
    {
        "model_uri": "s3://acme-models/lambda/model.onnx",
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/aideploy-serving:1.0",
        "deployment_type": "serverless",
        "target": {"cloud": "aws", "region": "us-east-1"},
    },
    {
        "model_uri": "gs://acme-models/cloud-run/model.onnx",
        "deployment_type": "serverless",
        "target": {"cloud": "gcp", "region": "europe-west4"},
        "cost_optimization_policy": {"hibernation_enabled": True},
    },
    {
        "model_uri": "https://acmemodels.blob.core.windows.net/models/apps/model.onnx",
        "deployment_type": "serverless",
        "target": {"cloud": "azure", "region": "westeurope"},
    },
]


@dataclass(frozen=True)
class Measurement:
    deployments: int
    resources: int
    seconds: float
    """Best of the repeats (wall clock)."""
    cpu_seconds: float
    """CPU time of that run; wall clock above it is time the shared machine gave to others."""
    ms_per_deployment: float
    repeats: int


def _documents(count: int) -> list[dict[str, Any]]:
    return [
        {"name": f"model-{index:04d}", "model_id": f"m-{index}", **_TARGETS[index % len(_TARGETS)]}
        for index in range(count)
    ]


def measure(count: int, repeats: int) -> Measurement:
    from aideploy_iac.synth import synthesize
    from stacks.config import DeploymentsConfig
    from stacks.programs import deployments

    config = DeploymentsConfig.model_validate(
        {"image": "ghcr.io/acme/aideploy-serving:1.0", "deployments": _documents(count)}
    )
    best = float("inf")
    best_cpu = 0.0
    resources = 0
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        result = synthesize(lambda: deployments(config), stack=f"bench-{count}")
        elapsed = time.perf_counter() - started
        if elapsed < best:
            best, best_cpu = elapsed, _cpu_seconds() - cpu_started
        resources = len(result.resources)
        if len(result.exports) != count:
            raise RuntimeError(f"expected {count} exported deployments, got {len(result.exports)}")
    return Measurement(count, resources, best, best_cpu, best / count * 1000, repeats)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats for N < 1000 (best is kept)"
    )
    options = parser.parse_args()

    load_before = os.getloadavg()
    # Import the SDKs once, outside the timings (a program pays this once per process).
    measure(4, 1)
    results: list[Measurement] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(
            "building deployments under the mock engine", total=len(options.sizes)
        )
        for size in options.sizes:
            progress.update(task, description=f"N = {size}")
            results.append(measure(size, 1 if size >= 1000 else options.repeats))
            progress.advance(task)
    load_after = os.getloadavg()

    reference = next((m for m in results if m.deployments >= 100), results[-1])
    largest = results[-1]
    growth = largest.ms_per_deployment / reference.ms_per_deployment
    linear_ok = growth <= LINEAR_TOLERANCE
    time_ok = largest.deployments < 1000 or largest.seconds < LARGEST_ALLOWED_SECONDS

    table = Table(title="aideploy_iac: deployments built under Pulumi's mock engine")
    for column in (
        "N deployments",
        "resources",
        "seconds",
        "cpu seconds",
        "ms / deployment",
        "vs N=100",
    ):
        table.add_column(column, justify="right")
    for item in results:
        table.add_row(
            str(item.deployments),
            str(item.resources),
            f"{item.seconds:.2f}",
            f"{item.cpu_seconds:.2f}",
            f"{item.ms_per_deployment:.1f}",
            f"{item.ms_per_deployment / reference.ms_per_deployment:.2f}x",
        )
    console.print(table)
    console.print(
        f"linear growth (ms/deployment at N={largest.deployments} within {LINEAR_TOLERANCE:g}x of "
        f"N={reference.deployments}): {'[green]PASS' if linear_ok else '[red]FAIL'}[/]  "
        f"({growth:.2f}x)"
    )
    console.print(
        f"N={largest.deployments} under {LARGEST_ALLOWED_SECONDS:g} s: "
        f"{'[green]PASS' if time_ok else '[red]FAIL'}[/]  ({largest.seconds:.1f} s)"
    )
    console.print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"on {os.cpu_count()} CPUs (the machine is shared)"
    )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "iac",
                "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "pulumi_sdk": metadata.version("pulumi"),
                    "load_average_before": load_before,
                    "load_average_after": load_after,
                },
                "targets_cycled": [
                    "kubernetes (spot, on-demand floor, KEDA)",
                    "aws-lambda",
                    "gcp-cloud-run",
                    "azure-container-apps",
                ],
                "results": [asdict(item) for item in results],
                "bars": {
                    "linear_growth": {
                        "ratio": round(growth, 3),
                        "limit": LINEAR_TOLERANCE,
                        "pass": linear_ok,
                    },
                    "largest_under_seconds": {
                        "seconds": round(largest.seconds, 2),
                        "limit": LARGEST_ALLOWED_SECONDS,
                        "pass": time_ok,
                    },
                },
            },
            indent=2,
        )
        + "\n"
    )
    console.print(
        f"wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}"
    )
    return 0 if linear_ok and time_ok else 1


if __name__ == "__main__":
    sys.exit(main())
