"""The cold-start path stays lean: nothing heavy is imported by ``python -m serving``."""

from __future__ import annotations

import subprocess
import sys

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
