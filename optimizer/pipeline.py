"""``optimize()``: from a model file and a request to a verified, measured artifact.

Every method is a list of candidate pass chains over the graph-optimized model; a single method
has one candidate, ``auto`` has several and keeps the best measured one. Work happens in a
hidden scratch folder that is renamed into place only when the artifact and its report are
complete, so readers never see half an output and a crash leaves nothing behind. The folder's
name is a hash of the input, the data and the request, which makes it the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from aideploy.errors import AideployError, InputError, NotSupportedError
from aideploy.schema import (
    OptimizationMethod,
    OptimizationOptions,
    OptimizationRequest,
    Precision,
    ResourceRequirements,
)
from optimizer.convert import to_onnx
from optimizer.data import (
    Dataset,
    check_index_bounds,
    generate_dataset,
    index_limits,
    load_dataset,
)
from optimizer.errors import (
    DISTILLATION_NOT_SUPPORTED,
    CalibrationDataError,
    OptimizationCancelledError,
    OptimizationFailedError,
    UnsupportedModelError,
)
from optimizer.logs import quiet_logs
from optimizer.measure import (
    LATENCY_BUDGET_SECONDS,
    AccuracyResult,
    LatencyStats,
    Outputs,
    Task,
    artifact_size,
    check_labels,
    compare_latency,
    evaluate_accuracy,
    infer_task,
    make_session,
    run_all,
    verify_artifact,
)
from optimizer.model_info import (
    ModelFormat,
    ModelInfo,
    external_data_files,
    inspect_model,
    load_onnx,
)
from optimizer.passes.base import Pass
from optimizer.passes.graph import GraphOptimization, GraphOptimizationConfig
from optimizer.passes.prune import StructuredPruning, StructuredPruningConfig, find_groups
from optimizer.passes.quantize import (
    DynamicInt8,
    DynamicInt8Config,
    Float16,
    Float16Config,
    Int4WeightOnly,
    Int4WeightOnlyConfig,
    StaticInt8,
    StaticInt8Config,
    quantizable_nodes,
)

__all__ = [
    "DEFAULT_MAX_ACCURACY_DROP",
    "CandidateReport",
    "OptimizationResult",
    "ProgressEvent",
    "optimize",
]

REPORT_NAME = "report.json"
DEFAULT_MAX_ACCURACY_DROP = 1.0
"""``auto`` without ``max_accuracy_drop`` loses at most this many points of the metric (for
``negative_mse``, whose change is in squared units, this many percent of the original's MSE)."""
DEFAULT_SPARSITY = 0.5
_CACHE_VERSION = "7"
_SENSITIVITY_SAMPLES = 16
_REFINE_GOAL_PP = 0.75
"""Without a floor, auto still spends size-neutral precision on sensitive layers down to this
(cosine 0.9925 for embeddings). Each layer kept in block-wise int8 costs latency (~4% at batch 8
on MiniLM), so smaller losses are left to an explicit ``max_accuracy_drop``."""
_SIZE_TIE = 0.01
"""Without targets, candidates within 1% of the original size of the smallest count as equal."""
_MAX_KEPT_LAYERS = (1, 2, 3, 4, 6, 8, 12, 16)
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
"""ONNX Runtime's error code banner, dropped from the one-line messages."""
_NOT_SLOWER_TOLERANCE = 1.0
"""The paired latency ratio to the original must be at most this at every batch size."""


class ProgressEvent(BaseModel):
    """One step of the work, for progress bars and job logs."""

    model_config = ConfigDict(frozen=True)

    step: int
    total: int
    message: str


class CandidateReport(BaseModel):
    """One measured candidate; ``auto`` reports them all, the chosen one first."""

    name: str
    precision: str | None
    passes: list[dict[str, Any]]
    size_bytes: int
    size_reduction_percentage: float
    latency: list[LatencyStats]
    original_latency: list[LatencyStats]
    latency_reduction_percentage: float
    """The smallest reduction over the requested batch sizes (negative = slower), from the
    paired per-round ratio to the original (see ``LatencyStats.ratio_to_first``)."""
    accuracy: AccuracyResult
    targets_met: bool
    unmet_targets: list[str]
    notes: list[str] = []


class OptimizationResult(BaseModel):
    """What ``optimize`` produced, as the API stores it and the CLI prints it."""

    artifact: Path
    report: Path
    method: OptimizationMethod
    precision: str | None
    size_reduction_percentage: float
    latency_reduction_percentage: float
    accuracy_change_percentage: float
    accuracy_metric: str
    targets_met: bool
    unmet_targets: list[str]
    original_size_bytes: int
    optimized_size_bytes: int
    original_latency: list[LatencyStats]
    optimized_latency: list[LatencyStats]
    accuracy: AccuracyResult
    threads: int
    batch_sizes: list[int]
    input_sha256: str
    data_generated: bool
    candidates: list[CandidateReport]
    notes: list[str]
    cached: bool = False


@dataclass
class _Candidate:
    name: str
    precision: str | None
    passes: list[Pass[Any]]
    notes: list[str] = field(default_factory=list)
    path: Path | None = None


@dataclass
class _Context:
    """Everything the steps share; ``report`` emits progress and honours cancellation."""

    request: OptimizationRequest
    options: OptimizationOptions
    work: Path
    original: Path
    base: Path
    data: Dataset
    task: Task
    threads: int
    reference: Outputs
    progress: Callable[[ProgressEvent], None] | None
    cancel: threading.Event | None
    latency_budget: float = LATENCY_BUDGET_SECONDS
    step: int = 0
    total: int = 3
    """Graph optimization, reference run, output; candidates add theirs."""
    notes: list[str] = field(default_factory=list)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise OptimizationCancelledError("optimization cancelled; no output was written")

    def report(self, message: str, extra_steps: int = 0) -> None:
        self.check_cancel()
        self.total += extra_steps
        self.step += 1
        if self.progress is not None:
            self.progress(
                ProgressEvent(step=min(self.step, self.total), total=self.total, message=message)
            )


def optimize(
    model: Path,
    request: OptimizationRequest,
    out_dir: Path,
    *,
    data: Path | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    cancel: threading.Event | None = None,
    latency_budget_seconds: float = LATENCY_BUDGET_SECONDS,
) -> OptimizationResult:
    """Optimize ``model`` as ``request`` asks; write ``out_dir/<key>/`` and return the result.

    ``latency_budget_seconds`` is the timed time per batch size (see
    :func:`~optimizer.measure.compare_latency`); shorter budgets suit smoke runs and tests.

    Raises :class:`~aideploy.errors.InputError` subclasses for bad models, data or requests,
    :class:`~aideploy.errors.NotSupportedError` for methods not offered, and
    :class:`~optimizer.errors.OptimizationCancelledError` when ``cancel`` is set.
    """
    model, out_dir = Path(model), Path(out_dir)
    options = _validate_request(request)
    _check_out_dir(out_dir)
    info = inspect_model(model)
    key = _cache_key(model, info, request, data, latency_budget_seconds)
    final = out_dir / key[:24]
    cached = _cached_result(final)
    if cached is not None:
        if progress is not None:
            progress(ProgressEvent(step=1, total=1, message="reused cached result"))
        return cached
    work = out_dir / f".tmp-{key[:12]}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        context = _prepare(model, info, request, options, work, data, progress, cancel)
        context.latency_budget = latency_budget_seconds
        candidates = _plan(context)
        reports = _measure_candidates(context, candidates)
        if request.method is OptimizationMethod.AUTO:
            reports, candidates = _refine_with_sensitivity(context, candidates, reports)
        chosen = _choose(context, candidates, reports)
        result = _write_output(context, key, chosen, reports, work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


# --- request and input ------------------------------------------------------------------------


def _validate_request(request: OptimizationRequest) -> OptimizationOptions:
    options = request.options
    method = request.method
    if method is OptimizationMethod.DISTILLATION:
        raise NotSupportedError(DISTILLATION_NOT_SUPPORTED)
    if options.precision is not None and method not in (
        OptimizationMethod.QUANTIZATION,
        OptimizationMethod.AUTO,
    ):
        raise InputError(
            f"precision: only applies to methods quantization and auto, not {method.value}"
        )
    if options.sparsity is not None and method not in (
        OptimizationMethod.PRUNING,
        OptimizationMethod.AUTO,
    ):
        raise InputError(f"sparsity: only applies to methods pruning and auto, not {method.value}")
    return options


def _check_out_dir(out_dir: Path) -> None:
    """The output must be a folder (created if missing), not a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output: {out_dir} is a file; expected a folder (created if missing)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"output: cannot create the folder {out_dir} ({exc.strerror})") from None


def _model_files(path: Path) -> list[Path]:
    """An ONNX file and its external data files: what its bytes are."""
    return [path, *sorted(external_data_files(load_onnx(path), path.parent))]


def _file_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _cache_key(
    model: Path,
    info: ModelInfo,
    request: OptimizationRequest,
    data: Path | None,
    latency_budget: float,
) -> str:
    """Input bytes (with external data), data bytes, the request, how long latency is measured
    and the optimizer version."""
    files = _model_files(model) if info.format is ModelFormat.ONNX else [model]
    parts = {
        "model": _file_digest(files),
        "data": _file_digest([data]) if data is not None and data.is_file() else None,
        "request": request.model_dump(mode="json"),
        "latency_budget": latency_budget,
        "version": _CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _cached_result(final: Path) -> OptimizationResult | None:
    report = final / REPORT_NAME
    if not report.is_file():
        return None
    result = OptimizationResult.model_validate_json(report.read_text())
    if not result.artifact.is_file():
        return None
    return result.model_copy(update={"cached": True})


def _default_threads(options: OptimizationOptions) -> int:
    """The request's threads, else the cpu a default deployment gets."""
    return options.threads or max(1, math.ceil(ResourceRequirements().cpu_cores))


def _prepare(
    model: Path,
    info: ModelInfo,
    request: OptimizationRequest,
    options: OptimizationOptions,
    work: Path,
    data: Path | None,
    progress: Callable[[ProgressEvent], None] | None,
    cancel: threading.Event | None,
) -> _Context:
    """Convert to ONNX if needed, load and check the data, and run the original once on it.

    Everything a bad model or bad data can break is found here, before any candidate is built:
    ONNX Runtime refusing the model, ids outside its embedding tables, labels that do not fit
    its output, data the original itself fails on.
    """
    notes: list[str] = []
    original = model
    dataset: Dataset | None = None
    if info.format is not ModelFormat.ONNX:
        if data is not None and info.format is ModelFormat.TORCHSCRIPT:
            dataset = load_dataset(data, info.inputs)
        original = to_onnx(model, work / "converted", data=dataset)
        notes.append(f"converted from {info.format.value} to ONNX")
        converted = inspect_model(original)
        if any(spec.shape and spec.shape[0] != -1 for spec in converted.inputs):
            notes.append(
                "the model has a static batch size that could not be made dynamic; export it "
                'with dynamic_shapes={...: {0: torch.export.Dim("batch")}}'
            )
        elif any(spec.shape and spec.shape[0] != -1 for spec in info.inputs):
            notes.append("the program was exported with a static batch; re-exported it dynamic")
        info = converted
    limits = index_limits(load_onnx(original))
    if dataset is None:
        dataset = (
            load_dataset(data, info.inputs)
            if data is not None
            else generate_dataset(info.inputs, limits=limits)
        )
    check_index_bounds(dataset, limits)
    notes.extend(dataset.notes)
    static_batch = next(
        (spec.shape[0] for spec in info.inputs if spec.shape and spec.shape[0] > 0), None
    )
    if static_batch is not None and any(size != static_batch for size in options.batch_sizes):
        raise InputError(
            f"batch_sizes: the model only accepts batch size {static_batch}, "
            f"got {options.batch_sizes}"
        )
    threads = _default_threads(options)
    context = _Context(
        request=request,
        options=options,
        work=work,
        original=original,
        base=original,
        data=dataset,
        task="embedding",
        threads=threads,
        reference={},
        progress=progress,
        cancel=cancel,
        notes=notes,
    )
    context.report("graph optimization (basic)")
    with _onnxruntime_errors(
        f"model: ONNX Runtime cannot load {model.name}", UnsupportedModelError
    ):
        context.base = GraphOptimization(GraphOptimizationConfig(level="basic")).run(
            original, work / "base"
        )
        session = make_session(original, threads)
    context.report("running the original model on the evaluation data")
    with _onnxruntime_errors(
        f"data: the original model fails on {dataset.source}", CalibrationDataError
    ):
        context.reference = run_all(session, dataset)
    if options.task is not None:
        context.task = options.task
    else:
        context.task, reason = infer_task(original, dataset)
        notes.append(
            f"accuracy judged as {context.task} ({reason}); set task (--task, metadata.task) to "
            "judge it otherwise"
        )
    check_labels(dataset, next(iter(context.reference.values())), context.task)
    return context


@contextlib.contextmanager
def _onnxruntime_errors(
    message: str, error: type[InputError] | type[NotSupportedError]
) -> Iterator[None]:
    """ONNX Runtime's own exceptions become ``error`` with ``message`` and ORT's first line."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    failures = (
        state.Fail,
        state.InvalidArgument,
        state.InvalidGraph,
        state.InvalidProtobuf,
        state.NoSuchFile,
        state.NotImplemented,
        state.RuntimeException,
    )
    try:
        yield
    except failures as exc:
        text = _ORT_PREFIX.sub("", str(exc).strip())
        detail = text.splitlines()[0] if text else type(exc).__name__
        raise error(f"{message}: {detail}") from exc


# --- planning ---------------------------------------------------------------------------------


def _int8_for(
    context: _Context, *, sensitive: tuple[str, ...] = (), only: str | None = None
) -> _Candidate:
    """The int8 recipe that is fast for this graph: static QDQ with convolutions, else dynamic.

    ``sensitive`` layers get higher precision: fp32 in QDQ graphs, block-wise int8
    (MatMulNBits, per-block activation scales) in dynamic ones, at about int8 size. ``only`` quantizes that single layer, for the
    sensitivity scan.
    """
    layers = quantizable_nodes(context.base, ("MatMul", "Gemm", "Conv")) if only else []
    others = tuple(name for name in layers if name != only)
    if _has_op(context.base, "Conv"):
        config = StaticInt8Config(exclude_nodes=(*sensitive, *others))
        note = ["static int8 calibrated on generated inputs"] if context.data.generated else []
        return _Candidate(
            "int8-static", Precision.INT8_STATIC.value, [StaticInt8(config, context.data)], note
        )
    config_dynamic = DynamicInt8Config(
        exclude_nodes=others, blockwise_nodes=sensitive, quantize_embeddings=only is None
    )
    return _Candidate("int8", Precision.INT8.value, [DynamicInt8(config_dynamic)])


def _precision_candidate(context: _Context, precision: Precision) -> _Candidate:
    if precision is Precision.INT8:
        convolutions = sum(node.op_type == "Conv" for node in load_onnx(context.base).graph.node)
        note = (
            [
                f"dynamic int8 left the {convolutions} convolution(s) in fp32 (ONNX Runtime's "
                "ConvInteger is several times slower than fp32); int8-static quantizes them"
            ]
            if convolutions
            else []
        )
        return _Candidate("int8", precision.value, [DynamicInt8(DynamicInt8Config())], note)
    if precision is Precision.INT8_STATIC:
        notes = (
            ["calibrated on inputs generated from the signature"] if context.data.generated else []
        )
        return _Candidate(
            "int8-static", precision.value, [StaticInt8(StaticInt8Config(), context.data)], notes
        )
    if precision is Precision.FP16:
        return _Candidate("fp16", precision.value, [Float16(Float16Config())])
    return _Candidate("int4", precision.value, [Int4WeightOnly(Int4WeightOnlyConfig())])


def _plan(context: _Context) -> list[_Candidate]:
    method, options = context.request.method, context.options
    if method is OptimizationMethod.GRAPH:
        return [
            _Candidate(
                "graph", None, [GraphOptimization(GraphOptimizationConfig(level="extended"))]
            )
        ]
    if method is OptimizationMethod.QUANTIZATION:
        return [_precision_candidate(context, options.precision or Precision.INT8)]
    if method is OptimizationMethod.PRUNING:
        sparsity = DEFAULT_SPARSITY if options.sparsity is None else options.sparsity
        passes: list[Pass[Any]] = [StructuredPruning(StructuredPruningConfig(sparsity=sparsity))]
        if not options.then_quantize:
            return [_Candidate(f"pruned-{sparsity:g}", None, passes)]
        int8 = _int8_for(context)
        return [
            _Candidate(f"pruned-{sparsity:g}+{int8.name}", int8.precision, [*passes, *int8.passes])
        ]
    return _auto_candidates(context)


def _auto_candidates(context: _Context) -> list[_Candidate]:
    """What ``auto`` tries; the fp32 graph-optimized model is the fallback that never loses."""
    options = context.options
    if options.precision is not None:
        candidates = [_precision_candidate(context, options.precision)]
    else:
        candidates = [_int8_for(context)]
        if _has_op(context.base, "MatMul", "Gemm"):
            candidates.append(
                _Candidate("int4", Precision.INT4.value, [Int4WeightOnly(Int4WeightOnlyConfig())])
            )
        candidates.append(_Candidate("fp16", Precision.FP16.value, [Float16(Float16Config())]))
    if options.sparsity is not None:
        import onnx

        if find_groups(onnx.load(str(context.base), load_external_data=False)):
            pruning = StructuredPruning(StructuredPruningConfig(sparsity=options.sparsity))
            int8 = _int8_for(context)
            candidates.append(
                _Candidate(
                    f"pruned-{options.sparsity:g}+{int8.name}",
                    int8.precision,
                    [pruning, *int8.passes],
                )
            )
    candidates.append(_Candidate("fp32-graph", None, []))
    return candidates


def _has_op(path: Path, *op_types: str) -> bool:
    return any(node.op_type in op_types for node in load_onnx(path).graph.node)


# --- running and measuring --------------------------------------------------------------------


def _run_candidate(context: _Context, candidate: _Candidate, index: int) -> Path:
    """Run the candidate's passes; a pass that crashes on this graph is an
    :class:`OptimizationFailedError` naming it (``auto`` then skips the candidate)."""
    artifact = context.base
    folder = context.work / f"candidate-{index}"
    for step, pass_ in enumerate(candidate.passes):
        context.check_cancel()
        try:
            with quiet_logs():
                artifact = pass_.run(artifact, folder / str(step))
        except AideployError:
            raise
        except Exception as exc:
            text = str(exc).strip()
            raise OptimizationFailedError(
                f"the {pass_.name} pass failed on this model: "
                f"{text.splitlines()[0] if text else type(exc).__name__}"
            ) from exc
        if isinstance(pass_, StructuredPruning) and pass_.summary is not None:
            summary = pass_.summary
            candidate.notes.append(
                f"structured pruning removed {summary.channels_before - summary.channels_after} of "
                f"{summary.channels_before} neurons/channels in {summary.groups} groups "
                f"({100 * (1 - summary.parameters_after / summary.parameters_before):.1f}% of parameters)"
            )
    candidate.path = artifact
    return artifact


def _measure_candidates(
    context: _Context, candidates: list[_Candidate], offset: int = 0
) -> list[CandidateReport]:
    """Build and verify every candidate, then time them all interleaved with the original.

    Each one must pass ``onnx.checker`` and one inference before it is measured and reported.
    ``auto`` skips a candidate that does not apply or fails verification (with a note); a
    single method raises.
    """
    context.total += len(candidates) + 1
    built: list[_Candidate] = []
    for index, candidate in enumerate(candidates):
        context.report(f"building and verifying candidate {candidate.name}")
        try:
            verify_artifact(_run_candidate(context, candidate, offset + index), context.data)
        except (UnsupportedModelError, OptimizationFailedError) as exc:
            if context.request.method is not OptimizationMethod.AUTO:
                raise
            context.notes.append(f"skipped candidate {candidate.name}: {exc}")
            continue
        built.append(candidate)
    context.report(f"measuring latency of {len(built)} candidate(s) against the original")
    sessions = [make_session(context.original, context.threads)]
    sessions += [
        make_session(candidate.path, context.threads) for candidate in built if candidate.path
    ]
    timings = compare_latency(
        sessions,
        context.data,
        list(context.options.batch_sizes),
        budget_seconds=context.latency_budget,
        should_stop=context.check_cancel,
    )
    unsettled = sorted({s.batch_size for stats in timings for s in stats if not s.stable})
    note = (
        f"latency at batch size(s) {unsettled} did not settle within twice the time budget "
        "(a busy machine?); read those changes with care"
    )
    if unsettled and note not in context.notes:
        context.notes.append(note)
    original_size = artifact_size(context.original)
    reports = []
    for candidate, latency, session in zip(built, timings[1:], sessions[1:], strict=True):
        assert candidate.path is not None
        outputs = run_all(session, context.data)
        accuracy = evaluate_accuracy(context.reference, outputs, context.data, context.task)
        size = artifact_size(candidate.path)
        report = CandidateReport(
            name=candidate.name,
            precision=candidate.precision,
            passes=[pass_.describe() for pass_ in candidate.passes],
            size_bytes=size,
            size_reduction_percentage=100.0 * (1 - size / original_size),
            latency=latency,
            original_latency=timings[0],
            latency_reduction_percentage=min(
                100.0 * (1 - stats.ratio_to_first) for stats in latency
            ),
            accuracy=accuracy,
            targets_met=False,
            unmet_targets=[],
            notes=candidate.notes,
        )
        unmet = _unmet_targets(context, report)
        reports.append(report.model_copy(update={"unmet_targets": unmet, "targets_met": not unmet}))
    candidates[:] = built
    return reports


def _accuracy_budget(context: _Context, accuracy: AccuracyResult) -> float | None:
    """The most accuracy a candidate may lose, in the unit of its metric's change."""
    drop = context.options.max_accuracy_drop
    if drop is None and context.request.method is OptimizationMethod.AUTO:
        return _in_metric_units(DEFAULT_MAX_ACCURACY_DROP, accuracy)
    return drop


def _in_metric_units(points: float, accuracy: AccuracyResult) -> float:
    """A default given in points: as is for percent metrics, else that percent of the MSE."""
    return points if accuracy.change_unit == "pp" else points / 100 * abs(accuracy.original)


def _unmet_targets(context: _Context, report: CandidateReport) -> list[str]:
    """The request's targets this candidate misses, each as a readable phrase."""
    unmet = []
    target_size = context.request.target_size_bytes
    if target_size is not None and report.size_bytes > target_size:
        unmet.append(
            f"target_size {context.request.target_size} (got {report.size_bytes / 1e6:.2f} MB)"
        )
    if context.request.target_latency is not None:
        first = report.latency[0]
        if first.p50_ms > context.request.target_latency:
            unmet.append(
                f"target_latency {context.request.target_latency:g} ms at batch {first.batch_size} "
                f"(got {first.p50_ms:.2f} ms)"
            )
    budget = _accuracy_budget(context, report.accuracy)
    if budget is not None and report.accuracy.change_pp < -budget:
        unmet.append(
            f"max_accuracy_drop {budget:g} {report.accuracy.change_unit} of "
            f"{report.accuracy.metric} (got {report.accuracy.describe_change()})"
        )
    return unmet


def _slower(report: CandidateReport) -> bool:
    return any(stats.ratio_to_first > _NOT_SLOWER_TOLERANCE for stats in report.latency)


# --- mixed precision by sensitivity -------------------------------------------------------------


def _refine_with_sensitivity(
    context: _Context, candidates: list[_Candidate], reports: list[CandidateReport]
) -> tuple[list[CandidateReport], list[_Candidate]]:
    """Give the int8 candidate's most sensitive layers higher precision, k layers at a time.

    Runs when int8 loses more than the floor (or, without one, more than
    :data:`_REFINE_GOAL_PP`): a scan quantizes one layer at a time and ranks them by the
    accuracy lost; then the k worst keep higher precision for growing k until the goal is met.
    """
    int8 = next((r for r in reports if r.name in ("int8", "int8-static")), None)
    if int8 is None:
        return reports, candidates
    floor = context.options.max_accuracy_drop
    goal = floor if floor is not None else _in_metric_units(_REFINE_GOAL_PP, int8.accuracy)
    if int8.accuracy.change_pp >= -goal:
        return reports, candidates
    layers = quantizable_nodes(context.base, ("MatMul", "Gemm", "Conv"))
    if len(layers) < 2:
        return reports, candidates
    ranking = _sensitivity_ranking(context, layers)
    context.notes.append(
        "sensitivity scan (accuracy change with only that layer quantized, worst first): "
        + ", ".join(f"{name} {loss:+.3g} {int8.accuracy.change_unit}" for name, loss in ranking[:6])
    )
    for kept in _MAX_KEPT_LAYERS:
        if kept >= len(layers):
            break
        sensitive = tuple(name for name, _ in ranking[:kept])
        candidate = _int8_for(context, sensitive=sensitive)
        candidate.name = f"{candidate.name}-mixed-{kept}"
        precision = "fp32" if candidate.name.startswith("int8-static") else "block-wise int8"
        candidate.notes.append(f"most sensitive layers in {precision}: {', '.join(sensitive)}")
        new_reports = _measure_candidates(context, [candidate], offset=len(candidates) + kept)
        if not new_reports:
            continue
        candidates.append(candidate)
        reports.append(new_reports[0])
        if new_reports[0].accuracy.change_pp >= -goal:
            break
    return reports, candidates


def _sensitivity_ranking(context: _Context, layers: list[str]) -> list[tuple[str, float]]:
    """Accuracy change when only that layer is quantized, worst first.

    Cached beside the outputs by the graph-optimized model's hash and the data, so auto runs
    with other targets on the same model skip the scan.
    """
    cache = context.work.parent / ".sensitivity" / f"{_sensitivity_key(context)}.json"
    if cache.is_file():
        return [(name, float(loss)) for name, loss in json.loads(cache.read_text())]
    sample = Dataset(
        inputs=context.data.batch(min(_SENSITIVITY_SAMPLES, context.data.samples)),
        labels=None if context.data.labels is None else context.data.labels[:_SENSITIVITY_SAMPLES],
        generated=context.data.generated,
    )
    reference = {name: values[: sample.samples] for name, values in context.reference.items()}
    losses = []
    context.total += len(layers)
    for index, layer in enumerate(layers):
        context.report(f"sensitivity scan: layer {index + 1}/{len(layers)} ({layer})")
        candidate = _int8_for(context, only=layer)
        path = _run_candidate(context, candidate, 1000 + index)
        outputs = run_all(make_session(path, context.threads), sample)
        losses.append(
            (layer, evaluate_accuracy(reference, outputs, sample, context.task).change_pp)
        )
        shutil.rmtree(path.parent.parent, ignore_errors=True)
    ranking = sorted(losses, key=lambda item: item[1])
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
    partial.write_text(json.dumps(ranking))
    partial.replace(cache)
    return ranking


def _sensitivity_key(context: _Context) -> str:
    digest = hashlib.sha256(_file_digest(_model_files(context.base)).encode())
    for name in sorted(context.data.inputs):
        digest.update(context.data.inputs[name][:_SENSITIVITY_SAMPLES].tobytes())
    digest.update(context.task.encode())
    return digest.hexdigest()[:24]


# --- choosing and writing ---------------------------------------------------------------------


def _choose(
    context: _Context, candidates: list[_Candidate], reports: list[CandidateReport]
) -> _Candidate:
    """Best candidate by the request; reorders ``reports`` so the chosen one comes first."""
    if not reports:
        raise UnsupportedModelError("no optimization applies to this model")
    has_targets = (
        context.request.target_size is not None or context.request.target_latency is not None
    )
    fallback_name = "fp32-graph"

    def meets(report: CandidateReport) -> bool:
        return report.targets_met and (not _slower(report) or report.name == fallback_name)

    feasible = [report for report in reports if meets(report)]
    if feasible:
        if has_targets:
            best = max(feasible, key=lambda r: (r.accuracy.change_pp, -r.size_bytes))
        else:
            # The smallest, but among (nearly) equally small ones the most accurate.
            band = min(r.size_bytes for r in feasible) + _SIZE_TIE * artifact_size(context.original)
            near = [r for r in feasible if r.size_bytes <= band]
            best = max(near, key=lambda r: (r.accuracy.change_pp, -r.latency[0].p50_ms))
    else:
        pool = [report for report in reports if not _slower(report)] or reports
        best = min(pool, key=lambda r: (len(r.unmet_targets), _shortfall(context, r)))
    if (
        context.request.method is OptimizationMethod.AUTO
        and _slower(best)
        and best.name != fallback_name
    ):
        best = next((r for r in reports if r.name == fallback_name), best)
    reports.sort(key=lambda report: report is not best)
    return next(candidate for candidate in candidates if candidate.name == best.name)


def _shortfall(context: _Context, report: CandidateReport) -> float:
    """How far a candidate misses its targets, each as a fraction of the target."""
    total = 0.0
    if (size := context.request.target_size_bytes) is not None:
        total += max(0.0, report.size_bytes / size - 1)
    if (latency := context.request.target_latency) is not None:
        total += max(0.0, report.latency[0].p50_ms / latency - 1)
    budget = _accuracy_budget(context, report.accuracy)
    if budget is not None:
        floor = _in_metric_units(0.1, report.accuracy)
        total += max(0.0, -report.accuracy.change_pp - budget) / max(budget, floor, 1e-12)
    return total


def _write_output(
    context: _Context,
    key: str,
    chosen: _Candidate,
    reports: list[CandidateReport],
    work: Path,
    final: Path,
) -> OptimizationResult:
    """Copy the artifact and its report into a staging folder, then rename it into place."""
    assert chosen.path is not None
    staging = work / "output"
    staging.mkdir()
    artifact = staging / "model.onnx"
    _copy_model(chosen.path, artifact)
    best = reports[0]
    original_size = artifact_size(context.original)
    result = OptimizationResult(
        artifact=final / artifact.name,
        report=final / REPORT_NAME,
        method=context.request.method,
        precision=best.precision,
        size_reduction_percentage=best.size_reduction_percentage,
        latency_reduction_percentage=best.latency_reduction_percentage,
        accuracy_change_percentage=best.accuracy.change_pp,
        accuracy_metric=best.accuracy.metric,
        targets_met=best.targets_met,
        unmet_targets=best.unmet_targets,
        original_size_bytes=original_size,
        optimized_size_bytes=best.size_bytes,
        original_latency=best.original_latency,
        optimized_latency=best.latency,
        accuracy=best.accuracy,
        threads=context.threads,
        batch_sizes=list(context.options.batch_sizes),
        input_sha256=key,
        data_generated=context.data.generated,
        candidates=reports,
        notes=[*context.notes, *best.notes],
    )
    (staging / REPORT_NAME).write_text(result.model_dump_json(indent=2))
    context.report("writing output")
    try:
        staging.rename(final)
    except OSError:
        cached = _cached_result(final)  # another run finished the same work first
        if cached is None:
            raise
        return cached
    return result


def _copy_model(source: Path, target: Path) -> None:
    """Copy an ONNX file; external data, if any, is re-saved beside it under the new name."""
    import onnx

    if not external_data_files(load_onnx(source), source.parent):
        shutil.copyfile(source, target)
        return
    model = onnx.load(str(source))
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{target.stem}.data",
    )
