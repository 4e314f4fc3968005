"""The Open Inference Protocol v2 REST endpoints, the binary tensor data extension and /metrics.

Routes (``{v}`` is optional: ``/versions/{v}`` may follow the model name)::

    GET  /v2                                   server metadata
    GET  /v2/health/live | /v2/health/ready    liveness / readiness (503 while loading or draining)
    GET  /v2/models/{name}[/versions/{v}]      model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer
    GET  /metrics                              Prometheus text format

Every refusal is ``{"error": "..."}`` with a 4xx status naming what was wrong; only a defect in
the server itself can produce a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
from onnxruntime import RunOptions

from aideploy import __version__
from serving.batching import Batcher
from serving.config import ModelSpec, ServeConfig
from serving.http import Request, Response, error_body, is_whole_number
from serving.metrics import Metrics, ModelStats
from serving.model import RunStoppedError
from serving.tensors import (
    RequestError,
    TensorSpec,
    decode_binary,
    decode_json_data,
    encode_binary,
    json_data,
)
from serving.watchdog import RunWatchdog

if TYPE_CHECKING:
    from serving.model import ServedModel

__all__ = ["InferenceApp", "settled"]

log = logging.getLogger("serving")

Arrays = dict[str, np.ndarray[Any, Any]]
Results = list[np.ndarray[Any, Any]]
Answer = Response | Awaitable[Response]
"""A response now, or one to await (see :data:`serving.http.Handler`)."""
T = TypeVar("T")
_GET = ("GET", "HEAD")
EXTENSIONS = ["binary_tensor_data"]


@dataclass(slots=True)
class _Slot:
    """A configured model: loading until ``loaded`` resolves, then ``model`` is set."""

    spec: ModelSpec
    loaded: asyncio.Future[ServedModel]
    model: ServedModel | None = None
    infer: Callable[[Arrays, list[str]], Results | Awaitable[Results]] | None = None
    """One request's run: its results at once when it ran inline, else an awaitable."""
    plans: dict[bytes, _Plan] = field(default_factory=dict)
    """Validated JSON headers of binary requests (see :class:`_Plan`), oldest first."""
    warm: bool = False
    """The model has run once: only then is it ready."""
    waiting: int = 0
    """Requests that arrived before the model was loaded and are not answered yet."""
    first_run: asyncio.Future[bool] | None = None
    """While waiting requests warm the model up (:meth:`InferenceApp.add_cold_model`):
    resolves True once one of their runs succeeded, False if none did."""


INLINE_RUN_SECONDS = 0.05
"""Runs averaging less than this execute on the event loop's own thread (see :class:`_RunSite`)."""
INLINE_RUN_LIMIT = 0.25
"""A run on the event loop's thread still going after this long (or after the request
timeout, if shorter) is stopped and run again on the inference thread."""


class _RunSite:
    """Where one model's runs execute: short ones on the event loop's thread, long ones on the
    inference thread.

    Handing a run to the inference thread and back costs two thread wake-ups on a CPU that
    onnxruntime keeps busy, plus a third runnable thread beside its own; measured on 2 cores,
    running short runs inline cut the added latency per request from ~0.5 to ~0.2 ms and
    raised throughput ~5%. Blocking the loop for a short run is cheaper than that. Runs that
    take long on average go to the inference thread so health checks and ``/metrics`` are
    still answered meanwhile, and so do all runs where several execute at once
    (``parallel_runs``). Until a run has been timed, runs go to the thread. A run on the loop
    that takes far longer than the average (an outsized input) is stopped by a watchdog after
    :data:`INLINE_RUN_LIMIT` and run again on the thread, where a request timeout can answer
    504 and stop it in turn.
    """

    __slots__ = ("average", "inline_allowed", "offloaded", "session_run")

    def __init__(
        self,
        session_run: Callable[[Arrays, list[str], RunOptions | None], Results],
        inline_allowed: bool,
    ) -> None:
        self.session_run = session_run
        self.inline_allowed = inline_allowed
        self.average: float | None = None
        """Exponential moving average of run durations, in seconds."""
        self.offloaded = 0
        """Runs handed to the inference thread and not finished yet: while there are any, a
        run stays in line behind them rather than running beside them."""

    @property
    def inline(self) -> bool:
        return (
            self.inline_allowed
            and self.offloaded == 0
            and self.average is not None
            and self.average < INLINE_RUN_SECONDS
        )

    def run(self, inputs: Arrays, outputs: list[str], options: RunOptions | None = None) -> Results:
        """One run, timed into the average (on whichever thread calls it); ``options`` lets
        another thread stop it."""
        started = time.perf_counter()
        try:
            return self.session_run(inputs, outputs, options)
        finally:
            elapsed = time.perf_counter() - started
            previous = self.average
            self.average = elapsed if previous is None else 0.8 * previous + 0.2 * elapsed


PLANS_PER_MODEL = 64
"""Validated request headers kept per model (see :class:`_Plan`)."""
PLAN_HEADER_BYTES = 4096
"""Longer JSON headers are not kept: they are rare, and each would hold that much memory."""


@dataclass(slots=True)
class _Plan:
    """What an inference request's JSON header asks of the model, validated.

    Clients send the same header bytes for every request whose tensors have the same shapes
    (tritonclient does, sending tensors in binary), so a request whose header is byte for byte
    one already validated skips the JSON parsing and checking and only slices its tensors out of
    the binary part; with the response's header kept likewise, a request's Python cost went from
    ~45 to ~25 microseconds (measured in-process on a trivial model)."""

    binary_inputs: list[tuple[TensorSpec, list[int], int, int]]
    """Inputs sent in binary: spec, shape, and where they start and end in the binary part."""
    binary_size: int
    outputs: list[str]
    binary_outputs: set[str]
    request_id: str | None
    fixed_response: bool
    """Every output is sent in binary with fixed-size values: the response's JSON header then
    depends on the output shapes alone, and is kept in ``response_heads``."""
    response_heads: dict[tuple[tuple[int, ...], ...], bytes] = field(default_factory=dict)


@dataclass(slots=True)
class _InferRequest:
    inputs: Arrays
    plan: _Plan


class InferenceApp:
    """Answers HTTP requests for the configured models; models arrive through :meth:`add_model`."""

    def __init__(self, config: ServeConfig, metrics: Metrics, executor: Executor) -> None:
        loop = asyncio.get_running_loop()
        self.config = config
        self.metrics = metrics
        self.executor = executor
        self.draining = False
        self.admitted = 0
        """Inference requests being handled now (for ``max_concurrency``)."""
        self.slots = {spec.name: _Slot(spec, loop.create_future()) for spec in config.models}
        timeout = config.request_timeout
        self.watchdog = RunWatchdog(min(INLINE_RUN_LIMIT, timeout) if timeout else INLINE_RUN_LIMIT)
        """Stops runs that hold up the event loop (see :class:`_RunSite`)."""
        for name in self.slots:
            metrics.model(name)

    def waiting(self, name: str) -> bool:
        """Requests are waiting for model ``name`` to load (say, the one that woke the server)."""
        return self.slots[name].waiting > 0

    def add_model(self, model: ServedModel) -> None:
        """Make a loaded model that has run once servable (waking requests waiting for it) and
        ready; or, after :meth:`add_cold_model`, ready."""
        slot = self.slots[model.name]
        if slot.model is not model:
            self._install(slot, model)
        slot.warm = True
        self.metrics.load_seconds[model.name] = model.load_seconds
        self.metrics.load_phases[model.name] = model.phases

    async def add_cold_model(self, model: ServedModel) -> bool:
        """Serve a loaded model that has not run yet to the requests waiting for it, the first
        of their runs being its warm-up, rather than make them wait for a run on zeros first.
        True once one of them ran; False if none did (all were refused, say): it then still
        needs a warm-up. Ready only after :meth:`add_model`."""
        slot = self.slots[model.name]
        first_run: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        slot.first_run = first_run
        started = time.perf_counter()
        self._install(slot, model)
        try:
            ran = await first_run
        finally:
            slot.first_run = None
        if ran:
            model.phases["warm_up"] = time.perf_counter() - started
            model.load_seconds += model.phases["warm_up"]
        return ran

    def _install(self, slot: _Slot, model: ServedModel) -> None:
        """Set up where ``model``'s runs execute, then wake the requests waiting for it."""
        slot.model = model
        stats = self.metrics.model(model.name)
        loop = asyncio.get_running_loop()
        site = _RunSite(model.run, inline_allowed=self.config.parallel_runs == 1)
        watchdog = self.watchdog

        async def offload(inputs: Arrays, outputs: list[str]) -> Results:
            options = RunOptions()
            site.offloaded += 1
            try:
                results = await loop.run_in_executor(
                    self.executor, site.run, inputs, outputs, options
                )
            except asyncio.CancelledError:  # timed out (504) or shutting down: free the thread
                options.terminate = True
                raise
            finally:
                site.offloaded -= 1
            if slot.first_run is not None and not slot.first_run.done():
                slot.first_run.set_result(True)  # a cold model's first runs are offloaded
            return results

        def run(inputs: Arrays, outputs: list[str]) -> Results | Awaitable[Results]:
            first = next(iter(inputs.values()))
            stats.batch_rows.observe(first.shape[0] if model.batchable else 1)
            if not site.inline:
                return offload(inputs, outputs)
            options = RunOptions()
            watchdog.watch(options)
            try:
                return site.run(inputs, outputs, options)
            except RunStoppedError:
                log.info(
                    "model %s: a run on the event loop went on past %.2fs; running it again on "
                    "the inference thread",
                    model.name,
                    watchdog.limit,
                )
                return offload(inputs, outputs)
            finally:
                watchdog.done()

        if model.batchable and self.config.max_batch_size > 1:
            slot.infer = Batcher(
                _awaitable(run),
                self.config.max_batch_size,
                self.config.max_batch_delay_ms / 1000,
                self.config.parallel_runs,
            ).infer
        else:
            slot.infer = run
        slot.loaded.set_result(model)

    def stop(self) -> None:
        """Draining: not ready any more, and requests still waiting for a model that will
        never load are answered 503 rather than left hanging until the grace period ends."""
        self.draining = True
        for slot in self.slots.values():
            if not slot.loaded.done():
                slot.loaded.set_exception(
                    RequestError(
                        503,
                        f"the server is shutting down before model {slot.spec.name!r} finished loading",
                    )
                )
                slot.loaded.exception()  # retrieved here, so no "never retrieved" warning

    @property
    def ready(self) -> bool:
        return not self.draining and all(slot.warm for slot in self.slots.values())

    def handle(self, request: Request) -> Answer:
        """Route one request; refusals become the protocol's ``{"error": ...}`` body. Answered
        on the spot where nothing has to be waited for (an inline run included)."""
        try:
            answer = self._route(request)
        except RequestError as exc:
            return _refusal(exc)
        return answer if isinstance(answer, Response) else _refusing(answer)

    def refused(self, target: str, status: int) -> None:
        """Count an inference request the HTTP layer refused (body over the limit, broken
        framing) against its model, like the refusals that reach :meth:`_infer`."""
        parts = _path_parts(target.partition("?")[0])
        is_infer = len(parts) >= 4 and parts[:2] == ["v2", "models"] and parts[-1] == "infer"
        if is_infer and parts[2] in self.slots:
            self.metrics.model(parts[2]).record(status, 0.0)

    def _route(self, request: Request) -> Answer:
        parts = _path_parts(request.path)
        if parts == ["metrics"]:
            _allow(request, _GET)
            return Response(
                200, self.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8"
            )
        if not parts or parts[0] != "v2":
            raise RequestError(
                404, f"no such endpoint {request.path[:200]!r}; the API lives under /v2"
            )
        rest = parts[1:]
        if not rest:
            _allow(request, _GET)
            return _json(
                200, {"name": "aideploy-serving", "version": __version__, "extensions": EXTENSIONS}
            )
        if rest == ["health", "live"]:
            _allow(request, _GET)
            return _json(200, {"live": True})
        if rest == ["health", "ready"]:
            _allow(request, _GET)
            return _json(200 if self.ready else 503, {"ready": self.ready})
        if rest[0] == "models" and len(rest) >= 2:
            return self._model_route(request, rest[1], rest[2:])
        raise RequestError(404, f"no such endpoint {request.path[:200]!r}")

    def _model_route(self, request: Request, name: str, rest: list[str]) -> Answer:
        slot = self.slots.get(name)
        if slot is None:
            served = ", ".join(sorted(self.slots))
            raise RequestError(404, f"unknown model {name!r}; this server serves: {served}")
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise RequestError(404, f"no such endpoint {request.path[:200]!r}")
            if rest[1] != slot.spec.version:
                raise RequestError(
                    404,
                    f"model {name!r} has no version {rest[1]!r}; it serves version {slot.spec.version!r}",
                )
            rest = rest[2:]
        if rest == []:
            _allow(request, _GET)
            if slot.model is not None:
                return _json(200, slot.model.metadata())
            return _metadata_when_loaded(slot)
        if rest == ["ready"]:
            _allow(request, _GET)
            ready = slot.warm and not self.draining
            return _json(200 if ready else 503, {"name": name, "ready": ready})
        if rest == ["infer"]:
            _allow(request, ("POST",))
            return self._infer(slot, request)
        raise RequestError(404, f"no such endpoint {request.path[:200]!r}")

    def _infer(self, slot: _Slot, request: Request) -> Answer:
        """Admit (503 past ``max_concurrency``), then answer; the request's count, status and
        latency are recorded when its answer is ready, now or later."""
        stats = self.metrics.model(slot.spec.name)
        limit = self.config.max_concurrency
        if limit and self.admitted >= limit:
            stats.record(503, 0.0)
            raise RequestError(
                503,
                f"the server is at its limit of {limit} concurrent inference requests",
                [("Retry-After", "1")],
            )
        self.admitted += 1
        started = time.perf_counter()
        try:
            if slot.model is not None:
                answer = self._answer(slot.model, slot, request)
            else:  # the first request of a cold start waits for the model
                answer = self._answer_when_loaded(slot, request)
            if isinstance(answer, Response):
                self._tally(stats, started, None)
                return answer
        except BaseException as exc:
            self._tally(stats, started, exc)
            raise
        return self._tallied(answer, stats, started)

    def _answer(self, model: ServedModel, slot: _Slot, request: Request) -> Answer:
        parsed = parse_infer_request(model, request, self.config.max_body_bytes, slot.plans)
        assert slot.infer is not None
        outcome = slot.infer(parsed.inputs, parsed.plan.outputs)
        if isinstance(outcome, list):
            return infer_response(model, parsed, outcome)
        return self._answer_when_run(model, parsed, outcome)

    async def _answer_when_loaded(self, slot: _Slot, request: Request) -> Response:
        slot.waiting += 1
        try:
            return await settled(self._answer(await slot.loaded, slot, request))
        finally:
            slot.waiting -= 1
            if slot.waiting == 0 and slot.first_run is not None and not slot.first_run.done():
                slot.first_run.set_result(False)  # answered, none of them by a run

    async def _answer_when_run(
        self, model: ServedModel, parsed: _InferRequest, running: Awaitable[Results]
    ) -> Response:
        timeout = self.config.request_timeout
        try:
            results = await (asyncio.wait_for(running, timeout) if timeout else running)
        except TimeoutError:
            raise RequestError(
                504, f"the inference took longer than the request timeout of {timeout:g}s"
            ) from None
        return infer_response(model, parsed, results)

    async def _tallied(
        self, answer: Awaitable[Response], stats: ModelStats, started: float
    ) -> Response:
        try:
            response = await answer
        except BaseException as exc:
            self._tally(stats, started, exc)
            raise
        self._tally(stats, started, None)
        return response

    def _tally(self, stats: ModelStats, started: float, failure: BaseException | None) -> None:
        """One inference request done: ``failure`` is what refused it (None: answered)."""
        self.admitted -= 1
        status = (
            200 if failure is None else failure.status if isinstance(failure, RequestError) else 500
        )
        stats.record(status, time.perf_counter() - started)


def parse_infer_request(
    model: ServedModel, request: Request, max_values: int, plans: dict[bytes, _Plan] | None = None
) -> _InferRequest:
    """Validate an inference request against the model: JSON part, then binary part if any.
    No input may describe more than ``max_values`` values (the body limit: each value takes at
    least a byte on the wire). ``plans``: headers validated before, reused and added to."""
    json_part, binary = _split_body(request)
    plan = plans.get(json_part) if plans is not None else None
    if plan is not None and plan.binary_size == len(binary):
        inputs = {
            spec.name: decode_binary(spec, shape, binary[start:stop])
            for spec, shape, start, stop in plan.binary_inputs
        }
        return _InferRequest(inputs, plan)
    parsed = _parse_document(model, json_part, binary, max_values)
    all_binary = len(parsed.plan.binary_inputs) == len(parsed.inputs)
    if plans is not None and all_binary and len(json_part) <= PLAN_HEADER_BYTES:
        if len(plans) >= PLANS_PER_MODEL:
            del plans[next(iter(plans))]
        plans[json_part] = parsed.plan
    return parsed


def _split_body(request: Request) -> tuple[bytes, memoryview]:
    """The JSON part and the binary part (after ``Inference-Header-Content-Length`` bytes)."""
    body = request.body
    header_length = request.headers.get("inference-header-content-length")
    if header_length is None:
        json_part, binary = body, memoryview(b"")
    else:
        if not is_whole_number(header_length) or not 0 < int(header_length) <= len(body):
            raise RequestError(
                400,
                f"Inference-Header-Content-Length must be a whole number between 1 and the body "
                f"size {len(body)}, got {header_length[:40]!r}",
            )
        json_part, binary = body[: int(header_length)], memoryview(body)[int(header_length) :]
    return json_part, binary


def _parse_document(
    model: ServedModel, json_part: bytes, binary: memoryview, max_values: int
) -> _InferRequest:
    try:
        document = json.loads(json_part)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RequestError(400, "the inference request must be a JSON object with 'inputs'")
    parameters = _object(document.get("parameters"), "request 'parameters'")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, "request 'id' must be a string")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError(400, "request 'inputs' must be a non-empty array of tensors")
    inputs: Arrays = {}
    binary_inputs: list[tuple[TensorSpec, list[int], int, int]] = []
    offset = 0
    for index, raw in enumerate(raw_inputs):
        spec, shape, input_parameters = _input_header(model, raw, index, inputs, max_values)
        if "binary_data_size" in input_parameters:
            if "data" in raw:
                raise RequestError(
                    400,
                    f"input {spec.name!r}: give either 'data' or parameters.binary_data_size, "
                    "not both",
                )
            size = input_parameters["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise RequestError(
                    400, f"input {spec.name!r}: binary_data_size must be a whole number of bytes"
                )
            if offset + size > len(binary):
                raise RequestError(
                    400,
                    f"input {spec.name!r}: binary_data_size {size} runs past the binary data "
                    f"({len(binary) - offset} bytes left after the JSON header)",
                )
            inputs[spec.name] = decode_binary(spec, shape, binary[offset : offset + size])
            binary_inputs.append((spec, shape, offset, offset + size))
            offset += size
        elif "data" in raw:
            inputs[spec.name] = decode_json_data(spec, shape, raw["data"])
        else:
            raise RequestError(
                400, f"input {spec.name!r}: needs 'data' or parameters.binary_data_size"
            )
    if offset != len(binary):
        raise RequestError(
            400,
            f"{len(binary) - offset} bytes of binary data after the JSON header belong to no input "
            "(check the inputs' binary_data_size and Inference-Header-Content-Length)",
        )
    missing = [name for name in model.inputs if name not in inputs]
    if missing:
        raise RequestError(
            400,
            f"missing input(s) {', '.join(map(repr, missing))}; the model needs {_names(model.inputs)}",
        )
    if model.batchable and len({array.shape[0] for array in inputs.values()}) > 1:
        rows = ", ".join(f"{name}: {array.shape[0]}" for name, array in inputs.items())
        raise RequestError(400, f"inputs disagree on the batch (first) dimension ({rows})")
    default_binary = _flag(parameters, "binary_data_output", "request parameters")
    outputs, binary_outputs = _requested_outputs(model, document.get("outputs"), default_binary)
    fixed_response = all(
        name in binary_outputs and model.outputs[name].datatype != "BYTES" for name in outputs
    )
    plan = _Plan(binary_inputs, len(binary), outputs, binary_outputs, request_id, fixed_response)
    return _InferRequest(inputs, plan)


def _input_header(
    model: ServedModel, raw: object, index: int, seen: Arrays, max_values: int
) -> tuple[TensorSpec, list[int], dict[str, Any]]:
    """An input's name, datatype and shape, checked against the model."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise RequestError(400, f"inputs[{index}] must be an object with a string 'name'")
    name = raw["name"]
    spec = model.inputs.get(name)
    if spec is None:
        raise RequestError(
            400,
            f"model {model.name!r} has no input {name!r}; its inputs are {_names(model.inputs)}",
        )
    if name in seen:
        raise RequestError(400, f"input {name!r} is given twice")
    if raw.get("datatype") != spec.datatype:
        raise RequestError(
            400,
            f"input {name!r}: datatype {raw.get('datatype')!r} does not match the model's {spec.datatype}",
        )
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise RequestError(
            400, f"input {name!r}: 'shape' must be an array of non-negative integers"
        )
    spec.check_shape(shape, max_values)
    parameters = _object(raw.get("parameters"), f"input {name!r} parameters")
    if "shared_memory_region" in parameters:
        raise RequestError(400, f"input {name!r}: the shared-memory extension is not supported")
    return spec, shape, parameters


def _requested_outputs(
    model: ServedModel, raw: object, default_binary: bool
) -> tuple[list[str], set[str]]:
    if raw is None or raw == []:  # the spec: "if not specified all outputs ... will be returned"
        return list(model.outputs), set(model.outputs) if default_binary else set()
    if not isinstance(raw, list):
        raise RequestError(400, "request 'outputs' must be an array of {'name': ...} objects")
    names: list[str] = []
    binary: set[str] = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError(400, f"outputs[{index}] must be an object with a string 'name'")
        name = item["name"]
        if name not in model.outputs:
            raise RequestError(
                400,
                f"model {model.name!r} has no output {name!r}; its outputs are {_names(model.outputs)}",
            )
        if name in names:
            raise RequestError(400, f"output {name!r} is requested twice")
        parameters = _object(item.get("parameters"), f"output {name!r} parameters")
        if parameters.get("class_count"):
            raise RequestError(
                400, f"output {name!r}: the classification extension (class_count) is not supported"
            )
        if "shared_memory_region" in parameters:
            raise RequestError(
                400, f"output {name!r}: the shared-memory extension is not supported"
            )
        names.append(name)
        wants_binary = parameters.get("binary_data", default_binary)
        if not isinstance(wants_binary, bool):
            raise RequestError(
                400, f"output {name!r}: parameters.binary_data must be true or false"
            )
        if wants_binary:
            binary.add(name)
    return names, binary


def infer_response(model: ServedModel, request: _InferRequest, results: Results) -> Response:
    """JSON outputs inline; binary outputs appended after the JSON header, in output order."""
    plan = request.plan
    blobs = [
        encode_binary(model.outputs[name].datatype, array)
        for name, array in zip(plan.outputs, results, strict=True)
        if name in plan.binary_outputs
    ]
    shapes = tuple(array.shape for array in results)
    header = plan.response_heads.get(shapes)
    if header is None:
        header = _response_header(model, plan, results, blobs)
        if plan.fixed_response and len(plan.response_heads) < PLANS_PER_MODEL:
            plan.response_heads[shapes] = header
    if not blobs:
        return Response(200, header)
    return Response(
        200,
        header + b"".join(blobs),
        "application/octet-stream",
        [("Inference-Header-Content-Length", str(len(header)))],
    )


def _response_header(
    model: ServedModel, plan: _Plan, results: Results, blobs: list[bytes]
) -> bytes:
    outputs: list[dict[str, Any]] = []
    sizes = (len(blob) for blob in blobs)
    for name, array in zip(plan.outputs, results, strict=True):
        datatype = model.outputs[name].datatype
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if name in plan.binary_outputs:
            entry["parameters"] = {"binary_data_size": next(sizes)}
        else:
            entry["data"] = json_data(datatype, array)
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": model.name,
        "model_version": model.version,
        "outputs": outputs,
    }
    if plan.request_id is not None:
        document["id"] = plan.request_id
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def _refusal(exc: RequestError) -> Response:
    return Response(exc.status, error_body(str(exc)), headers=exc.headers)


async def _refusing(answer: Awaitable[Response]) -> Response:
    """A later answer whose refusal, if any, becomes the ``{"error": ...}`` response."""
    try:
        return await answer
    except RequestError as exc:
        return _refusal(exc)


async def settled(outcome: T | Awaitable[T]) -> T:
    """What ``outcome`` is, or resolves to if it is awaitable (an answer, a run's results)."""
    if isinstance(outcome, Awaitable):
        return cast(T, await outcome)
    return outcome


async def _metadata_when_loaded(slot: _Slot) -> Response:
    return _json(200, (await slot.loaded).metadata())


def _awaitable(
    run: Callable[[Arrays, list[str]], Results | Awaitable[Results]],
) -> Callable[[Arrays, list[str]], Awaitable[Results]]:
    """``run`` for callers that always await (the batcher)."""

    async def run_later(inputs: Arrays, outputs: list[str]) -> Results:
        return await settled(run(inputs, outputs))

    return run_later


def _path_parts(path: str) -> list[str]:
    """``/v2/models/%73cale/infer`` -> ``["v2", "models", "scale", "infer"]``."""
    if "%" in path:
        from urllib.parse import unquote

        path = unquote(path)
    return [part for part in path.split("/") if part]


def _allow(request: Request, methods: tuple[str, ...]) -> None:
    if request.method not in methods:
        raise RequestError(
            405,
            f"{request.method} is not allowed here; use {' or '.join(methods)}",
            [("Allow", ", ".join(methods))],
        )


def _json(status: int, document: dict[str, Any]) -> Response:
    return Response(status, json.dumps(document, separators=(",", ":")).encode())


def _object(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(400, f"{where} must be a JSON object")
    return value


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise RequestError(400, f"{where}: {key} must be true or false")
    return value


def _names(tensors: dict[str, TensorSpec]) -> str:
    return ", ".join(repr(name) for name in tensors)
