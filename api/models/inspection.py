"""Upload validation with ``optimizer.inspect_model``, and the conversion of PyTorch uploads to
the ONNX the serving runtime loads, in a confined child process unless the upload is a small
ONNX model alone.

PyTorch archives (TorchScript, torch.export; zip files) are always inspected in the child:
loading one compiles and runs code that came with the upload, so it must never run in the API
process. The same child converts them to ONNX, once, at upload (TorchScript records no input
shapes, so its example inputs come from the upload's ``sample_data``). Sample data is checked
there too: it is as large as a model, and reading it must not cost the API's memory.

The child limits itself before it imports anything: CPU time, address space, open files, no core
dumps, and, through Linux Landlock (:mod:`api.models.sandbox`), no write anywhere but the
conversion folder of the upload's private staging folder (nowhere when it only inspects), no
TCP, no signals to other processes. Each file it writes is capped by ``RLIMIT_FSIZE`` at the
conversion budget, and the parent measures the folder while the child runs and kills it once
the folder holds more than the budget. The child runs with an empty environment in that staging
folder and is killed with its process group after :data:`TIMEOUT_SECONDS`. Without Landlock the
child still inspects (no file may grow), but refuses to convert: a PyTorch upload is then a 503.

Large ONNX files go to the child too, so the API's memory stays flat while a 2 GB protobuf is
parsed; below :data:`IN_PROCESS_LIMIT_BYTES` an ONNX file without sample data (parsed, never
executed) is checked in a worker thread, which is cheaper than starting a process (about half a
second of imports). The child prints one JSON line: what it found, or the one-line error and the
form field it is about.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from aideploy.errors import AideployError, InputError
from aideploy.settings import environment_values
from api.models.sandbox import LandlockUnavailableError, restrict_writes

if TYPE_CHECKING:
    from optimizer.data import Dataset
    from optimizer.model_info import ModelInfo

TIMEOUT_SECONDS = 300.0
IN_PROCESS_LIMIT_BYTES = 16 * 1024 * 1024
CONVERSION_OVERHEAD_BYTES = 256 * 1024 * 1024
"""What a conversion may write on top of a few times the model's size (see
:func:`conversion_budget`)."""
SERVING_FOLDER = "onnx"
"""Where in the conversion folder the converted model is written."""
_CHILD_MEMORY_BYTES = 3 * 1024**3
"""Address space for the interpreter, torch and onnx (about 0.7 GB mapped), on top of which the
child may use a few times the size of the model and of the sample data."""
_CHILD_OPEN_FILES = 256
_POLL_SECONDS = 0.1
_ENTRY_BYTES = 4096
"""Every file or folder the child creates counts at least this much against its budget."""


class InspectionError(AideployError):
    """The inspector itself failed (crashed, ran out of its limits or time, could not be
    confined), not the model's validation."""


class SampleDataError(InputError):
    """The sample data does not fit the model (the form's ``sample_data``)."""


@dataclass(frozen=True)
class Inspection:
    """What the inspector learned about an upload."""

    signature: dict[str, Any]
    """The uploaded model's info (format, inputs, outputs...)."""
    serving: Path | None = None
    """The PyTorch model converted to ONNX, in the conversion folder; ``None`` when the upload
    is served as it is."""
    serving_signature: dict[str, Any] | None = None
    """The converted model's info, checked in this process."""
    sample: dict[str, Any] | None = None
    """What the sample data holds (``samples``, ``labels``), when there is some."""


def conversion_budget(size: int) -> int:
    """Bytes the conversion of a model of ``size`` bytes may write: the ONNX holds the same
    weights, a few of them twice (tied embeddings, folded constants), plus temporary files."""
    return 3 * size + CONVERSION_OVERHEAD_BYTES


async def inspect_upload_files(
    model: Path, *, sample_data: Path | None = None, convert_dir: Path | None = None
) -> Inspection:
    """Validate the model (and the sample data against it); a PyTorch model is converted to ONNX
    in ``convert_dir`` (an empty private folder) when one is given.

    Raises :class:`InputError` naming the model, :class:`SampleDataError` naming the sample
    data, :class:`InspectionError` when the inspector failed."""
    size = model.stat().st_size
    pytorch = zipfile.is_zipfile(model)
    if sample_data is None and not pytorch and size <= IN_PROCESS_LIMIT_BYTES:
        return Inspection(await anyio.to_thread.run_sync(_describe, model))
    converting = convert_dir if pytorch else None
    arguments = [str(model), str(size)]
    if sample_data is not None:
        arguments += ["--sample-data", str(sample_data)]
    if converting is not None:
        arguments += ["--convert", str(converting)]
    watch = (converting, conversion_budget(size)) if converting is not None else None
    answer = await _run_child(arguments, converting or model.parent, watch)
    reported = answer.get("sample")
    sample = (
        {"samples": int(reported["samples"]), "labels": bool(reported["labels"])}
        if reported
        else None
    )
    if converting is None or not answer.get("converted"):
        return Inspection(dict(answer["signature"]), sample=sample)
    serving = _converted_file(converting / SERVING_FOLDER)
    return Inspection(
        dict(answer["signature"]), serving, await _describe_converted(serving), sample
    )


def _describe(path: Path) -> dict[str, Any]:
    from optimizer import inspect_model

    return _without_path(inspect_model(path))


async def _describe_converted(path: Path) -> dict[str, Any]:
    """The converted model, checked here rather than believed: code of the upload ran in the
    child that wrote it."""
    size = path.stat().st_size
    if size <= IN_PROCESS_LIMIT_BYTES:
        described = await anyio.to_thread.run_sync(_describe, path)
    else:
        described = (await _run_child([str(path), str(size)], path.parent, None))["signature"]
    if described.get("format") != "onnx":
        raise InspectionError("the converter wrote something that is not an ONNX model")
    return dict(described)


def _converted_file(folder: Path) -> Path:
    """The one regular file the conversion wrote (no link to anything outside the folder)."""
    entries = list(folder.iterdir()) if folder.is_dir() else []
    if len(entries) != 1:
        raise InspectionError(f"the converter wrote {len(entries)} files instead of one model")
    [path] = entries
    status = path.lstat()
    if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1 or path.suffix != ".onnx":
        raise InspectionError("the converter wrote something other than one ONNX file")
    return path


async def _run_child(
    arguments: list[str], cwd: Path, watch: tuple[Path, int] | None
) -> dict[str, Any]:
    """Run the confined child; its answer, or the error it names. ``watch``: the folder the
    child writes in and the bytes it may hold, measured while it runs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.models.inspection", *arguments,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=_child_environment(),
        start_new_session=True,  # its own process group: killed whole on timeout
    )  # fmt: skip
    output = asyncio.ensure_future(process.communicate())
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            while not (await asyncio.wait({output}, timeout=_POLL_SECONDS))[0]:
                await _check_budget(watch)
        await _check_budget(watch)  # what it wrote since the last look
    except TimeoutError:
        await _kill(process, output)
        raise InputError(
            f"model: checking it took longer than {TIMEOUT_SECONDS:.0f} s; a real model of "
            "its size loads much faster"
        ) from None
    except BaseException:  # over budget, or the request was cancelled: the child goes too
        await _kill(process, output)
        raise
    stdout, stderr = output.result()
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
    if "error" not in answer:
        return answer
    message, field = str(answer["error"]), answer.get("field")
    if field == "sample_data":
        raise SampleDataError(message)
    if field == "inspector":
        raise InspectionError(message)
    raise InputError(message)


async def _check_budget(watch: tuple[Path, int] | None) -> None:
    if watch is None:
        return
    folder, budget = watch
    if await anyio.to_thread.run_sync(_usage, folder) > budget:
        raise InputError(
            f"model: converting it to ONNX wrote more than {budget} bytes, more than any real "
            "model of its size needs"
        )


def _usage(folder: Path) -> int:
    """Bytes under ``folder`` (links not followed), each entry at least :data:`_ENTRY_BYTES`;
    entries vanishing while the child works are skipped."""
    total = 0
    pending = [folder]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                status = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += max(status.st_size, _ENTRY_BYTES)
            if stat.S_ISDIR(status.st_mode):
                pending.append(Path(entry.path))
    return total


async def _kill(process: asyncio.subprocess.Process, output: asyncio.Future[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await asyncio.shield(process.wait())
    output.cancel()  # its output is of no use now
    output.add_done_callback(_discard_result)


def _discard_result(future: asyncio.Future[Any]) -> None:
    """Nothing waits for the child's output any more: whatever reading it ended with is
    retrieved here, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _child_environment() -> dict[str, str]:
    """Nothing of the API's environment (its secrets, cloud credentials) reaches the child."""
    environment = {
        "PATH": os.defpath,
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": ".",  # the child's working folder: the conversion folder when it converts
    }
    return {**environment, **environment_values(["PYTHONPATH"])}


def _confine(size: int, *, sample_size: int = 0, writable: Path | None = None) -> None:
    """Limit this process before anything of the upload is read: writes only beneath
    ``writable``, each file at most the conversion budget (no write at all without it).

    Raises :class:`~api.models.sandbox.LandlockUnavailableError` (the resource limits are
    set by then) when the kernel cannot confine writes to a folder."""
    import resource
    import tempfile

    # Libraries ask for the temporary folder at import (dill); finding it writes a probe file,
    # which the limits below may forbid. Found now, it is remembered.
    tempfile.gettempdir()

    memory = _CHILD_MEMORY_BYTES + 4 * (size + sample_size)
    limits = {
        resource.RLIMIT_CPU: int(TIMEOUT_SECONDS),
        resource.RLIMIT_AS: memory,
        resource.RLIMIT_NOFILE: _CHILD_OPEN_FILES,
        # No file grows past this: writes fail with EFBIG (Python ignores SIGXFSZ).
        resource.RLIMIT_FSIZE: conversion_budget(size) if writable is not None else 0,
        resource.RLIMIT_CORE: 0,
    }
    for limit, value in limits.items():
        _, hard = resource.getrlimit(limit)
        capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (capped, capped))
    restrict_writes(writable)


def _check(model: Path, sample_data: Path | None, convert_dir: Path | None) -> dict[str, Any]:
    """Inspect the model, check the sample data against it, convert a PyTorch model to ONNX
    when asked, and load the ONNX that will be served (run on the sample data when given)."""
    from optimizer import ModelFormat, inspect_model, to_onnx

    info = inspect_model(model)
    answer: dict[str, Any] = {"signature": _without_path(info)}
    dataset = _sample(sample_data, info) if sample_data is not None else None
    serving = model if info.format is ModelFormat.ONNX else None
    converted = False
    if convert_dir is not None and serving is None:
        if info.format is ModelFormat.TORCHSCRIPT and dataset is None:
            names = [spec.name for spec in info.inputs]
            raise SampleDataError(
                "required for a TorchScript model: TorchScript records no input shapes or "
                "dtypes, so converting it to ONNX for serving needs example inputs; send a .npz "
                f"of arrays named {names} (first axis = samples, optional 'labels')"
            )
        serving = to_onnx(model, convert_dir / SERVING_FOLDER, data=dataset)
        answer["converted"] = converted = True
        if dataset is not None and sample_data is not None:  # checked against the ONNX too
            dataset = _sample(sample_data, inspect_model(serving))
    if serving is not None and (dataset is not None or converted):
        _try_serving(serving, dataset)
    if dataset is not None:
        answer["sample"] = {"samples": dataset.samples, "labels": dataset.labels is not None}
    return answer


def _without_path(info: ModelInfo) -> dict[str, Any]:
    described = info.model_dump(mode="json")
    described.pop("path", None)
    return described


def _sample(path: Path, info: ModelInfo) -> Dataset:
    from optimizer.data import load_dataset
    from optimizer.errors import CalibrationDataError

    try:
        return load_dataset(path, info.inputs)
    except CalibrationDataError as exc:
        raise SampleDataError(str(exc).removeprefix("data: ")) from None


def _try_serving(serving: Path, dataset: Dataset | None) -> None:
    """ONNX Runtime loads the model to be served (and runs it on a batch of the sample data):
    a model that cannot be served is refused at upload, not when it is deployed."""
    from optimizer.data import check_index_bounds, index_limits
    from optimizer.errors import CalibrationDataError, InvalidModelError
    from optimizer.measure import make_session
    from optimizer.model_info import load_onnx

    if dataset is not None:
        try:
            check_index_bounds(dataset, index_limits(load_onnx(serving)))
        except CalibrationDataError as exc:
            raise SampleDataError(str(exc).removeprefix("data: ")) from None
    try:
        session = make_session(serving, threads=1)
    except Exception as exc:
        raise InvalidModelError(
            f"model: ONNX Runtime cannot load it as ONNX for serving ({_first_line(exc)})"
        ) from None
    if dataset is not None:
        try:
            session.run(None, dataset.batch(min(2, dataset.samples)))
        except Exception as exc:
            raise SampleDataError(
                f"the model fails on these inputs in ONNX Runtime ({_first_line(exc)})"
            ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.models.inspection")
    parser.add_argument("model", type=Path)
    parser.add_argument("size", type=int)
    parser.add_argument("--sample-data", type=Path)
    parser.add_argument("--convert", type=Path, help="the folder the child may write in")
    arguments = parser.parse_args(argv)
    sample_size = arguments.sample_data.stat().st_size if arguments.sample_data else 0
    answer: dict[str, Any]
    try:
        _confine(arguments.size, sample_size=sample_size, writable=arguments.convert)
    except LandlockUnavailableError:
        if arguments.convert is not None:
            answer = {
                "error": "converting a PyTorch model needs Linux Landlock (kernel 5.13 or "
                "later, enabled) to keep the converter's writes in its folder, and this "
                "server has none; upload the model exported to ONNX instead",
                "field": "inspector",
            }
            sys.stdout.write(json.dumps(answer) + "\n")
            return 0
    try:
        answer = _check(arguments.model, arguments.sample_data, arguments.convert)
    except SampleDataError as exc:
        answer = {"error": str(exc), "field": "sample_data"}
    except InputError as exc:
        answer = {"error": str(exc), "field": "file"}
    except MemoryError:
        answer = {
            "error": "model: loading it needs more memory than any real model of its size",
            "field": "file",
        }
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
