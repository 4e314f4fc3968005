"""Models: fetching into the local cache, the onnxruntime session, warm-up and running.

A model is ready only once its session exists and one warm-up inference has run, so the first
client request never pays for onnxruntime's lazy initialisation.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import onnxruntime as ort

from aideploy.errors import InputError, NotSupportedError
from serving.config import ModelSpec, ServeConfig
from serving.tensors import DATATYPES, ORT_TO_DATATYPE, RequestError, TensorSpec

__all__ = [
    "ModelLoadError",
    "RunStoppedError",
    "ServedModel",
    "fetch_model",
    "load_model",
    "needs_batch_check",
    "open_model",
    "start_loading",
    "storage_location",
    "warm_up",
]

log = logging.getLogger("serving.model")

Arrays = dict[str, np.ndarray[Any, Any]]
_STAMP = ".aideploy-source.json"
_FINGERPRINT_KEYS = (
    "size",
    "ETag",
    "etag",
    "mtime",
    "LastModified",
    "last_modified",
    "md5Hash",
    "generation",
)


class ModelLoadError(InputError):
    """A model that cannot be fetched or opened; the message names the source and why."""


class RunStoppedError(Exception):
    """A run ended early on purpose (its ``RunOptions.terminate`` was set)."""


@dataclass(slots=True)
class ServedModel:
    """One loaded model. ``run`` is thread-safe (onnxruntime sessions are) and blocking."""

    name: str
    version: str
    session: ort.InferenceSession
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    batchable: bool
    """Every input and output has a dynamic first (batch) axis, checked by a warm-up run."""
    load_seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per load phase: ``fetch``, ``session`` (onnxruntime building it), ``warm_up``
    (the first inference) and, with batching, ``batch_check``: the cold start's parts."""
    file: Path = field(default_factory=Path)

    def metadata(self) -> dict[str, Any]:
        """The protocol's model metadata response."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [_spec_json(spec) for spec in self.inputs.values()],
            "outputs": [_spec_json(spec) for spec in self.outputs.values()],
        }

    def run(
        self, inputs: Arrays, output_names: list[str], options: ort.RunOptions | None = None
    ) -> list[np.ndarray[Any, Any]]:
        """One ``session.run``; a failure caused by the inputs becomes a 400 naming the model,
        one stopped through ``options.terminate`` raises :class:`RunStoppedError`."""
        try:
            return self.session.run(output_names, inputs, options)  # type: ignore[no-any-return]
        except Exception as exc:  # onnxruntime raises its own types, all caused by the inputs here
            if options is not None and options.terminate:
                raise RunStoppedError(self.name) from None
            raise RequestError(
                400, f"model {self.name!r} rejected the inputs: {_ort_message(exc)}"
            ) from None


def load_model(spec: ModelSpec, config: ServeConfig) -> ServedModel:
    """Fetch, open and warm up ``spec`` on this thread (see :func:`open_model`, :func:`warm_up`)."""
    model = open_model(spec, config)
    warm_up(model, config)
    return model


def open_model(
    spec: ModelSpec, config: ServeConfig, opening: threading.Event | None = None
) -> ServedModel:
    """Fetch ``spec`` and build its onnxruntime session; not servable before :func:`warm_up`.

    ``opening`` is set just before onnxruntime starts building the session (which releases
    the GIL), so a caller can time its own work to overlap with it.
    """
    started = time.perf_counter()
    fetched = fetch_model(
        spec.source,
        config.model_dir,
        azure_account=config.azure_storage_account,
        azure_anonymous=config.azure_storage_anon,
    )
    file = model_file(fetched, spec.source)
    fetched_at = time.perf_counter()
    options = ort.SessionOptions()
    # Parallel runs share the session's one pool of intra-op threads.
    options.intra_op_num_threads = max(1, config.threads // config.parallel_runs)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if config.spin_wait and config.parallel_runs == 1:
        # Spin between the operators of a run only: once it returns the threads sleep, so the
        # core is free for the network work between runs and an idle server burns no quota.
        # Spinning on after a run made each response's send ~0.13 ms slower (the woken client
        # had to preempt the server: the other core was busy spinning).
        options.add_session_config_entry("session.force_spinning_stop", "1")
    else:
        # Idle intra-op threads sleep instead of spinning: slower here, but kinder to cores
        # shared with other busy processes. Runs in parallel keep the shared pool spinning all
        # the time, against each other's threads: measured 2 runs of 2 threads on 2 cores,
        # 153 req/s spinning, 206 sleeping.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if opening is not None:
        opening.set()
    try:
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(
            f"{spec.source}: onnxruntime cannot load it: {_ort_message(exc)}"
        ) from None
    created = time.perf_counter()
    inputs = {meta.name: _tensor_spec(meta, spec.source, "input") for meta in session.get_inputs()}
    outputs: dict[str, TensorSpec] = {}
    for meta in session.get_outputs():
        if meta.type in ORT_TO_DATATYPE:
            outputs[meta.name] = _tensor_spec(meta, spec.source, "output")
        else:
            log.warning(
                "model %s: output %r is a %s, not a tensor; it is not served",
                spec.name,
                meta.name,
                meta.type,
            )
    if not outputs:
        raise NotSupportedError(f"{spec.source}: the model has no tensor outputs to serve")
    model = ServedModel(
        spec.name, spec.version, session, inputs, outputs, batchable=False, file=file
    )
    model.phases = {"fetch": fetched_at - started, "session": created - fetched_at}
    model.load_seconds = time.perf_counter() - started
    return model


def warm_up(model: ServedModel, config: ServeConfig) -> None:
    """One inference on zeros, so no client pays for onnxruntime's lazy initialisation; with
    batching configured, a second at batch 2 checks that the outputs follow the batch axis.

    Run it on the thread that will run the requests: a thread's first run costs onnxruntime
    ~4 ms more (measured on the benchmark's encoder), which the first request would pay."""
    started = time.perf_counter()
    _run_zeros(model, rows=1)
    warmed = time.perf_counter()
    model.phases["warm_up"] = warmed - started
    if needs_batch_check(model, config):
        model.batchable = _run_zeros(model, rows=2)
        model.phases["batch_check"] = time.perf_counter() - warmed
        if not model.batchable:
            log.warning(
                "model %s: outputs do not follow the inputs' first axis; batching is off",
                model.name,
            )
    model.load_seconds += time.perf_counter() - started


def needs_batch_check(model: ServedModel, config: ServeConfig) -> bool:
    """Batching is configured and every input and output has a dynamic first axis: a warm-up
    run at batch 2 then tells whether the outputs really follow the batch axis."""
    signatures = (*model.inputs.values(), *model.outputs.values())
    return config.max_batch_size > 1 and all(s.shape and s.shape[0] == -1 for s in signatures)


def warm_thread(model: ServedModel) -> None:
    """One run on zeros, to pay this thread's first-run cost (see :func:`warm_up`) before a
    client would; for the inference threads beyond the first."""
    _run_zeros(model, rows=1)


def start_loading(config: ServeConfig) -> list[Future[ServedModel]]:
    """Fetch and open every model on a background thread, starting now; the caller warms each
    up (:func:`warm_up`) on its inference thread.

    Returns once the first session is being built: that part releases the GIL, so whatever
    the caller does next (importing asyncio, binding the port) overlaps with it instead of
    delaying the thread's start by holding the GIL.
    """
    futures: list[Future[ServedModel]] = [Future() for _ in config.models]
    opening = threading.Event()

    def load() -> None:
        for spec, future in zip(config.models, futures, strict=True):
            try:
                model = open_model(spec, config, opening)
            except BaseException as exc:  # handed to the event loop, which reports it
                future.set_exception(exc)
                break
            future.set_result(model)
        opening.set()

    threading.Thread(target=load, name="model-loader", daemon=True).start()
    opening.wait()
    return futures


def _run_zeros(model: ServedModel, rows: int) -> bool:
    """Run once on zeros (dynamic dimensions = 1, the first = ``rows``); True if every output's
    first axis came back with ``rows`` entries."""
    feeds: Arrays = {}
    for spec in model.inputs.values():
        shape = [1 if dim == -1 else dim for dim in spec.shape]
        if shape and spec.shape[0] == -1:
            shape[0] = rows
        feeds[spec.name] = _zeros(spec.datatype, shape)
    try:
        results = model.run(feeds, list(model.outputs))
    except RequestError as exc:
        raise ModelLoadError(
            f"model {model.name!r}: the warm-up inference on zero-filled inputs failed ({exc}); "
            "the model must accept inputs with every dynamic dimension set to 1"
        ) from None
    return all(result.ndim and result.shape[0] == rows for result in results)


def _zeros(datatype: str, shape: list[int]) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=DATATYPES[datatype])


def _tensor_spec(meta: Any, source: str, kind: str) -> TensorSpec:
    datatype = ORT_TO_DATATYPE.get(meta.type)
    if datatype is None:
        raise NotSupportedError(
            f"{source}: {kind} {meta.name!r} has type {meta.type}, which is not served"
        )
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in meta.shape)
    return TensorSpec(meta.name, datatype, shape)


def _spec_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _ort_message(exc: Exception) -> str:
    """onnxruntime's first line without its ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :`` prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.rsplit(" : ", 1)[-1] if text.startswith("[ONNXRuntimeError]") else text


def model_file(path: Path, source: str) -> Path:
    """The ``.onnx`` file to open: ``path`` itself, or the single one in the folder ``path``."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelLoadError(f"{source}: no such file or folder")
    found = sorted(path.glob("*.onnx")) or sorted(path.rglob("*.onnx"))
    if len(found) != 1:
        what = (
            "no .onnx file"
            if not found
            else f"{len(found)} .onnx files ({', '.join(p.name for p in found[:5])})"
        )
        raise ModelLoadError(f"{source}: the folder holds {what}; expected exactly one")
    return found[0]


def fetch_model(
    source: str,
    cache_dir: Path,
    *,
    azure_account: str | None = None,
    azure_anonymous: bool = False,
) -> Path:
    """A local path as is; a URI (``s3://``, ``gs://``, ``az://``, ``https://<account>.blob.
    core.windows.net/...``, ``file://``...) downloaded through fsspec into ``cache_dir``, reused
    while the object's size/etag/mtime are unchanged (see :func:`storage_location` for Azure).

    The download goes to a temporary folder that is renamed into place, so a server killed
    mid-download never leaves a half model that the next start would trust.
    """
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelLoadError(f"{source}: no such file or folder")
        return path
    # Only a URI needs these: a local model's start-up path (the cold start) skips them.
    import hashlib
    import json
    import shutil

    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec is in the serving extra
        raise ModelLoadError(
            f"{source}: loading from a URI needs fsspec (pip install 'aideploy[serving]')"
        ) from None
    url, options = storage_location(source, azure_account, azure_anonymous)
    try:
        fs, remote = fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        raise ModelLoadError(f"{source}: {exc}") from None
    try:
        info = fs.info(remote)
        listing = (
            fs.find(remote, detail=True) if info.get("type") == "directory" else {remote: info}
        )
    except FileNotFoundError:
        raise ModelLoadError(f"{source}: no such object or folder") from None
    except Exception as exc:  # each filesystem raises its own credential/network errors
        raise ModelLoadError(f"{source}: cannot read it: {exc}") from None
    fingerprint = {
        name: {key: str(meta[key]) for key in _FINGERPRINT_KEYS if key in meta}
        for name, meta in sorted(listing.items())
    }
    tail = remote.rstrip("/").rsplit("/", 1)[-1] or "model"
    key = f"{hashlib.sha256(source.encode()).hexdigest()[:16]}-{tail}"
    target = cache_dir.expanduser() / key
    stamp = target / _STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == fingerprint:
        log.info("model %s: using the cached copy in %s", source, target)
        return target / tail
    staging = _staging_folder(target.parent)
    target = staging.parent / key
    try:
        log.info("model %s: downloading %d file(s) into %s", source, len(listing), target)
        if info.get("type") == "directory":
            fs.get(remote.rstrip("/") + "/", str(staging / tail), recursive=True)
        else:
            fs.get(remote, str(staging / tail))
        (staging / _STAMP).write_text(json.dumps(fingerprint))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except OSError as exc:
        raise ModelLoadError(f"{source}: download into {target.parent} failed: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / tail


_AZURE_HOST = re.compile(r"^([a-z0-9]{3,24})\.(?:blob|dfs)\.core\.windows\.net$")
_AZURE_SCHEMES = ("az", "abfs", "abfss")


def storage_location(
    source: str, azure_account: str | None = None, azure_anonymous: bool = False
) -> tuple[str, dict[str, Any]]:
    """The fsspec URL and filesystem options a model URI is read with.

    Everything but Azure goes to fsspec as it is: s3fs and gcsfs find the platform's workload
    identity themselves (IRSA / Lambda role, GKE workload identity / Cloud Run service account).
    Azure Blob Storage is always ``az://CONTAINER/PATH`` on adlfs with an explicit account
    (``AZURE_STORAGE_ACCOUNT_NAME``, or the one in ``az://CONTAINER@ACCOUNT.blob.core.windows.
    net/PATH`` and ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH``) and ``anon=False``:
    adlfs then signs in with ``DefaultAzureCredential`` (workload or managed identity, a
    user-assigned one picked by ``AZURE_CLIENT_ID``), where older adlfs went anonymous and an
    ``https://`` URL would have gone anonymously over plain HTTP. ``AZURE_STORAGE_ANON=true``
    (``azure_anonymous``) reads a public container instead.
    """
    scheme, separator, rest = source.partition("://")
    scheme = scheme.lower()
    if scheme in _AZURE_SCHEMES:
        where, _, path = rest.partition("/")
        container, at, host = where.partition("@")
        match = _AZURE_HOST.match(host.lower())
        if at and match is None:
            raise ModelLoadError(
                f"{source}: expected az://CONTAINER/PATH (with AZURE_STORAGE_ACCOUNT_NAME) or "
                "az://CONTAINER@ACCOUNT.blob.core.windows.net/PATH"
            )
        account = match.group(1) if match else azure_account
    elif scheme in ("https", "http") and separator:
        host, _, location = rest.partition("/")
        match = _AZURE_HOST.match(host.lower())
        if match is None:
            return source, {}
        if "?" in location:  # the query is left out of the message: it may hold a signature
            raise ModelLoadError(
                f"{source.partition('?')[0]}?...: a query (SAS token) in an Azure blob URL is not "
                "supported: the server signs in with its workload or managed identity"
            )
        account = match.group(1)
        container, _, path = unquote(location).partition("/")
    else:
        return source, {}
    if not account:
        raise ModelLoadError(
            f"{source}: which Azure storage account? Set AZURE_STORAGE_ACCOUNT_NAME or use "
            "az://CONTAINER@ACCOUNT.blob.core.windows.net/PATH"
        )
    if not container:
        raise ModelLoadError(f"{source}: no container; expected az://CONTAINER/PATH")
    return f"az://{container}/{path}", {"account_name": account, "anon": azure_anonymous}


def _staging_folder(cache_dir: Path) -> Path:
    """A fresh download folder in ``cache_dir``, or in the temporary directory when that is
    read-only: AWS Lambda's filesystem is, apart from ``/tmp``, whatever the variable says."""
    import tempfile

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / "aideploy-models"
        log.warning(
            "model folder %s is not writable (%s); downloading into %s",
            cache_dir,
            exc.strerror,
            fallback,
        )
        fallback.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".download-", dir=fallback))
