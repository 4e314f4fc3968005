"""The cold-start path stays lean: nothing heavy is imported by ``python -m serving``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.support import ROOT

HEAVY = (
    "pydantic",
    "pydantic_settings",
    "typer",
    "rich",
    "litestar",
    "starlette",
    "uvicorn",
    "fsspec",
    "torch",
    "onnx",
)

PROBE = """
import sys
import serving.__main__, serving.launch, serving.server, serving.app, serving.model, serving.healthcheck
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print(",".join(heavy))
"""


def test_serving_start_up_imports_nothing_heavy() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == ""


THREADS_PROBE = """
import os
import serving.__main__
print(os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir("/proc/self/task")))
"""


def _threads_after_start_up_imports(blas_threads: str | None) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if blas_threads is not None:
        environment["OPENBLAS_NUM_THREADS"] = blas_threads
    result = subprocess.run(
        [sys.executable, "-c", THREADS_PROBE],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    setting, threads = result.stdout.split()
    return setting, int(threads)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_numpy_blas_starts_no_worker_threads_in_the_server() -> None:
    """OpenBLAS's workers spin for a while after numpy loads, taking a core from the session
    being built (see serving.config.single_threaded_blas); an explicit setting is kept."""
    setting, threads = _threads_after_start_up_imports(None)
    kept, threads_with_two = _threads_after_start_up_imports("2")
    assert setting == "1"
    assert kept == "2"
    assert threads_with_two == threads + 1
