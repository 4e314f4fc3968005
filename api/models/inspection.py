"""Upload validation with ``optimizer.inspect_model``, in a child process for large files.

The inspector parses the whole file (a 2 GB ONNX model is 2 GB of protobuf). Above
:data:`IN_PROCESS_LIMIT_BYTES` it runs in a short-lived child, so the API's memory stays flat
while a large model is checked; below it, a worker thread is cheaper than starting a process
(about half a second of imports) and the memory is small. The child prints one JSON line: the
model info, or the one-line error.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import anyio.to_thread

from aideploy.errors import AideployError, InputError

_TIMEOUT_SECONDS = 300.0
IN_PROCESS_LIMIT_BYTES = 16 * 1024 * 1024


class InspectionError(AideployError):
    """The inspector itself failed (crashed or timed out), not the model's validation."""


async def inspect_uploaded_model(path: Path) -> dict[str, Any]:
    """The model's info as JSON data; :class:`InputError` with the inspector's message if the
    file is not a valid model."""
    if path.stat().st_size <= IN_PROCESS_LIMIT_BYTES:
        return await anyio.to_thread.run_sync(_describe, path)
    return await _inspect_in_child(path)


def _describe(path: Path) -> dict[str, Any]:
    from optimizer import inspect_model

    described = inspect_model(path).model_dump(mode="json")
    described.pop("path", None)  # where the upload was staged: meaningless afterwards
    return described


async def _inspect_in_child(path: Path) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.models.inspection", str(path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), _TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise InspectionError(
            f"validating the model took longer than {_TIMEOUT_SECONDS:.0f} s"
        ) from None
    try:
        answer: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise InspectionError(
            f"the model inspector exited with code {process.returncode}: {tail[0]}"
        ) from None
    if "error" in answer:
        raise InputError(str(answer["error"]))
    return answer


def _main(argument: str) -> int:
    try:
        answer = _describe(Path(argument))
    except InputError as exc:
        answer = {"error": str(exc)}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
