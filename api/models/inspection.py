"""Upload validation with ``optimizer.inspect_model``, in a confined child process unless the file
is a small ONNX model.

PyTorch archives (TorchScript, torch.export; zip files) are always inspected in the child: loading
one compiles and runs code that came with the upload, so it must never run in the API process.
The child limits itself before it imports anything (CPU time, address space, open files, no file
writes, no core dumps), runs with an empty environment in the upload's private staging folder, and
is killed with its process group after :data:`TIMEOUT_SECONDS`. Large ONNX files go to the child
too, so the API's memory stays flat while a 2 GB protobuf is parsed; below
:data:`IN_PROCESS_LIMIT_BYTES` an ONNX file (parsed, never executed) is checked in a worker
thread, which is cheaper than starting a process (about half a second of imports). The child
prints one JSON line: the model info, or the one-line error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import zipfile
from pathlib import Path
from typing import Any

import anyio.to_thread

from aideploy.errors import AideployError, InputError
from aideploy.settings import environment_values

TIMEOUT_SECONDS = 300.0
IN_PROCESS_LIMIT_BYTES = 16 * 1024 * 1024
_CHILD_MEMORY_BYTES = 3 * 1024**3
"""Address space for the interpreter, torch and onnx (about 0.7 GB mapped), on top of which the
child may use a few times the file's size."""
_CHILD_OPEN_FILES = 256


class InspectionError(AideployError):
    """The inspector itself failed (crashed, ran out of its limits or time), not the model's
    validation."""


async def inspect_uploaded_model(path: Path) -> dict[str, Any]:
    """The model's info as JSON data; :class:`InputError` with the inspector's message if the
    file is not a valid model."""
    size = path.stat().st_size
    if size > IN_PROCESS_LIMIT_BYTES or zipfile.is_zipfile(path):
        return await _inspect_in_child(path, size)
    return await anyio.to_thread.run_sync(_describe, path)


def _describe(path: Path) -> dict[str, Any]:
    from optimizer import inspect_model

    described = inspect_model(path).model_dump(mode="json")
    described.pop("path", None)  # where the upload was staged: meaningless afterwards
    return described


async def _inspect_in_child(path: Path, size: int) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.models.inspection", str(path), str(size),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=path.parent,
        env=_child_environment(),
        start_new_session=True,  # its own process group: killed whole on timeout
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT_SECONDS)
    except TimeoutError:
        await _kill(process)
        raise InputError(
            f"model: checking it took longer than {TIMEOUT_SECONDS:.0f} s; a real model of "
            "its size loads much faster"
        ) from None
    except BaseException:  # the request was cancelled: the child goes with it
        await _kill(process)
        raise
    try:
        answer: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        if process.returncode is not None and process.returncode < 0:  # SIGXCPU, SIGSEGV...
            raise InputError(
                f"model: the checker was stopped by signal {-process.returncode} while loading "
                "it (CPU time, memory or a crash); a real model of its size loads within the "
                "limits"
            ) from None
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise InspectionError(
            f"the model inspector exited with code {process.returncode}: {tail[0]}"
        ) from None
    if "error" in answer:
        raise InputError(str(answer["error"]))
    return answer


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await asyncio.shield(process.wait())


def _child_environment() -> dict[str, str]:
    """Nothing of the API's environment (its secrets, cloud credentials) reaches the child."""
    environment = {
        "PATH": os.defpath,
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": ".",  # the upload's private staging folder (the child's working folder)
    }
    return {**environment, **environment_values(["PYTHONPATH"])}


def _confine(size: int) -> None:
    """Limit this process before anything of the upload is read."""
    import resource
    import tempfile

    # Libraries ask for the temporary folder at import (dill); finding it writes a probe file,
    # which the limits below forbid. Found now, it is remembered.
    tempfile.gettempdir()

    memory = _CHILD_MEMORY_BYTES + 4 * size
    limits = {
        resource.RLIMIT_CPU: int(TIMEOUT_SECONDS),
        resource.RLIMIT_AS: memory,
        resource.RLIMIT_NOFILE: _CHILD_OPEN_FILES,
        resource.RLIMIT_FSIZE: 0,  # no file grows: writes fail with EFBIG (Python ignores SIGXFSZ)
        resource.RLIMIT_CORE: 0,
    }
    for limit, value in limits.items():
        _, hard = resource.getrlimit(limit)
        capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (capped, capped))


def _main(argument: str, size: str) -> int:
    _confine(int(size))
    try:
        answer = _describe(Path(argument))
    except InputError as exc:
        answer = {"error": str(exc)}
    except MemoryError:
        answer = {"error": "model: loading it needs more memory than any real model of its size"}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2]))
