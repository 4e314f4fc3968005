"""The measurement harness: size on disk, latency and accuracy of an original and an optimized
model, measured the same way so the difference is the optimization and not the harness.

Latency runs both models interleaved (A, B, B, A, ...) on sessions with a fixed intra-op thread
count, after warm-up, until the paired median is stable, so a noisy neighbour slows both alike.
Accuracy judges the model's first output (its prediction, which labels refer to) and lists the
fidelity of every output.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from optimizer.data import Dataset
from optimizer.errors import CalibrationDataError, OptimizationFailedError
from optimizer.model_info import external_data_files, load_onnx

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import onnxruntime

__all__ = [
    "LATENCY_BUDGET_SECONDS",
    "AccuracyResult",
    "LatencyStats",
    "OutputFidelity",
    "Outputs",
    "Task",
    "artifact_size",
    "check_labels",
    "compare_latency",
    "evaluate_accuracy",
    "infer_task",
    "make_session",
    "run_all",
    "verify_artifact",
]

Task = Literal["classification", "embedding", "regression"]
Outputs = dict[str, "npt.NDArray[np.floating]"]
"""Every output of a model over a dataset, by name, in the model's output order."""
_CLASSIFIER_OUTPUT = re.compile(r"logit|prob|class|label|score", re.IGNORECASE)
_EMBEDDING_OUTPUT = re.compile(r"embed|hidden|feature|vector|pool|encod", re.IGNORECASE)
_CLASSIFIER_HEADS = frozenset({"Softmax", "LogSoftmax", "Gemm"})
_EVAL_CHUNK = 64
LATENCY_BUDGET_SECONDS = 4.0
"""Seconds of timed rounds per batch size: enough for a stable median on a quiet 2-core box."""
_STABLE_SPREAD = 0.02
"""The paired ratio's median over each half of the rounds may differ by this much."""
_MAX_BUDGET_FACTOR = 2.0
"""An unstable median gets up to this many times the time budget before it is reported."""


class LatencyStats(BaseModel):
    """Milliseconds per ``run`` at one batch size."""

    model_config = ConfigDict(frozen=True)

    batch_size: int
    p50_ms: float
    p90_ms: float
    runs: int
    ratio_to_first: float = 1.0
    """Median over rounds of this run's time divided by the first session's run in the same
    round: a paired comparison that cancels load changing between rounds on a shared CPU."""
    stable: bool = True
    """Whether the paired ratio's median over the first and second half of the rounds agreed
    within 2% when measuring stopped (more rounds are run until it does, within limits)."""


class OutputFidelity(BaseModel):
    """How close one output of the optimized model stays to the original's."""

    model_config = ConfigDict(frozen=True)

    name: str
    cosine_similarity: float
    max_abs_error: float


class AccuracyResult(BaseModel):
    """Quality of a candidate against the task or the original; metrics in percent."""

    model_config = ConfigDict(frozen=True)

    metric: str
    """``top1_accuracy``, ``negative_mse``, ``top1_agreement`` or ``cosine_similarity``."""
    output: str
    """The output the metric judges: the model's first, its prediction."""
    original: float
    optimized: float
    change_pp: float
    """The change of ``metric``, negative when worse, in ``change_unit``."""
    change_unit: Literal["pp", "mse"]
    """``pp`` (percentage points) for the percent metrics; for ``negative_mse`` the change is
    in the labels' squared units, not a percentage."""
    cosine_similarity: float
    """Mean cosine similarity of the judged output to the original's, in [-1, 1]."""
    max_abs_error: float
    samples: int
    outputs: list[OutputFidelity]
    """Fidelity of every output, the judged one first."""

    def describe_change(self) -> str:
        """The change with its unit, e.g. ``-0.42 pp`` or ``-0.0013 mse``."""
        if self.change_unit == "pp":
            return f"{self.change_pp:+.2f} pp"
        return f"{self.change_pp:+.3g} mse"


def artifact_size(path: Path) -> int:
    """Bytes on disk of an ONNX model including its external data files."""
    files = external_data_files(load_onnx(path), path.parent)
    return path.stat().st_size + sum(file.stat().st_size for file in files)


def make_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    """A CPU session with a fixed thread count and default (full) online optimization.

    Idle intra-op threads sleep rather than spin: the sessions are timed in turns, and spinning
    threads of the session timed just before steal the CPU from the one timed now (on 2 cores
    this inflated int8 MiniLM's batch-1 time by ~70% and made the paired ratios swing ±6%).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_artifact(path: Path, data: Dataset) -> None:
    """``onnx.checker`` plus one inference: nothing unverified is ever reported."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
        make_session(path, threads=1).run(None, data.batch(1))
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptimizationFailedError(
            f"optimized model {path.name} failed verification: {first_line}"
        ) from exc


def compare_latency(
    sessions: list[onnxruntime.InferenceSession],
    data: Dataset,
    batch_sizes: list[int],
    *,
    warmup: int = 3,
    min_runs: int = 15,
    max_runs: int = 300,
    budget_seconds: float = LATENCY_BUDGET_SECONDS,
    should_stop: Callable[[], None] | None = None,
) -> list[list[LatencyStats]]:
    """Latency of every session at every batch size, interleaved; ``result[session][batch]``.

    Runs continue past ``min_runs`` until ``budget_seconds`` (per batch size), then while the
    paired median is not stable, up to twice the budget or ``max_runs``. The order alternates
    each round so neither model always runs on a warmer cache. Each session's
    ``ratio_to_first`` compares it with the first session round by round.
    """
    import numpy as np

    results: list[list[LatencyStats]] = [[] for _ in sessions]
    for batch_size in batch_sizes:
        feed = data.batch(batch_size)
        for session in sessions:
            for _ in range(warmup):
                session.run(None, feed)
        timings: list[list[float]] = [[] for _ in sessions]
        started = time.perf_counter()
        round_index = 0
        while round_index < max_runs:
            if round_index >= min_runs:
                elapsed = time.perf_counter() - started
                if elapsed >= _MAX_BUDGET_FACTOR * budget_seconds:
                    break
                if elapsed >= budget_seconds and _stable(timings):
                    break
            order = range(len(sessions)) if round_index % 2 == 0 else reversed(range(len(sessions)))
            for index in order:
                begin = time.perf_counter()
                sessions[index].run(None, feed)
                timings[index].append((time.perf_counter() - begin) * 1000.0)
            round_index += 1
            if should_stop is not None and round_index % 10 == 0:
                should_stop()
        first = np.asarray(timings[0])
        stable = _stable(timings)
        for index, samples in enumerate(timings):
            values = np.asarray(samples)
            results[index].append(
                LatencyStats(
                    batch_size=batch_size,
                    p50_ms=float(np.median(values)),
                    p90_ms=float(np.percentile(values, 90)),
                    runs=len(samples),
                    ratio_to_first=float(np.median(values / first)),
                    stable=stable,
                )
            )
    return results


def _stable(timings: list[list[float]]) -> bool:
    """Whether every session's paired ratio has the same median over both halves of the rounds."""
    import numpy as np

    first = np.asarray(timings[0])
    half = len(first) // 2
    for samples in timings[1:]:
        ratios = np.asarray(samples) / first
        early, late = float(np.median(ratios[:half])), float(np.median(ratios[half:]))
        if abs(early - late) > _STABLE_SPREAD * max(float(np.median(ratios)), 1e-12):
            return False
    return True


def run_all(session: onnxruntime.InferenceSession, data: Dataset) -> Outputs:
    """Every output over the whole dataset, in chunks, as float64, by output name."""
    import numpy as np

    names = [output.name for output in session.get_outputs()]
    chunks: list[list[npt.NDArray[np.floating]]] = [[] for _ in names]
    for start in range(0, data.samples, _EVAL_CHUNK):
        size = min(_EVAL_CHUNK, data.samples - start)
        for index, value in enumerate(session.run(None, data.batch(size, start))):
            chunks[index].append(np.asarray(value, dtype=np.float64))
    return {name: np.concatenate(parts) for name, parts in zip(names, chunks, strict=True)}


def infer_task(path: Path, data: Dataset) -> tuple[Task, str]:
    """How to judge the model without an explicit task, and why (for the report's notes).

    Integer labels mean classification, float labels regression. Without labels the first
    output decides: named like logits or probabilities, or produced by a softmax or a linear
    head (Gemm) with two or more columns, it is a classifier (top-1 agreement); named like an
    embedding, or anything else, it is compared by cosine similarity.
    """
    import numpy as np

    if data.labels is not None:
        if np.issubdtype(data.labels.dtype, np.integer):
            return "classification", "integer labels are class ids"
        return "regression", "float labels are regression targets"
    model = load_onnx(path)
    output = model.graph.output[0]
    dims = output.type.tensor_type.shape.dim
    rank = len(dims) if output.type.tensor_type.HasField("shape") else None
    width = dims[-1].dim_value if rank and dims[-1].HasField("dim_value") else 0
    if rank in (None, 2) and _CLASSIFIER_OUTPUT.search(output.name):
        return "classification", f"output {output.name!r} is named like class scores"
    if _EMBEDDING_OUTPUT.search(output.name):
        return "embedding", f"output {output.name!r} is named like an embedding"
    producers = {name: node for node in model.graph.node for name in node.output}
    producer = producers.get(output.name)
    while producer is not None and producer.op_type == "Identity":
        producer = producers.get(producer.input[0])
    head = producer.op_type if producer is not None else None
    if head == "Add" and producer is not None:  # MatMul + bias, as a Linear exports on 3-D+
        inner = [producers.get(name) for name in producer.input]
        head = "Gemm" if any(node and node.op_type == "MatMul" for node in inner) else head
    if rank == 2 and width != 1 and head in _CLASSIFIER_HEADS:
        return "classification", f"output {output.name!r} comes from a {head} head"
    return "embedding", f"output {output.name!r} is compared as a vector"


def check_labels(data: Dataset, predictions: npt.NDArray[np.floating], task: Task) -> None:
    """Labels must fit the judged output: class ids within its width, or targets of its shape.

    Checked once on the original's outputs, before any candidate is built.
    """
    import numpy as np

    labels = data.labels
    if labels is None:
        return
    where = f"data: {data.source}['labels']"
    if task == "classification":
        per_sample = predictions.shape[:-1]
        if not np.issubdtype(labels.dtype, np.integer):
            raise CalibrationDataError(
                f"{where} has dtype {labels.dtype}; a classifier's labels are integer class ids"
            )
        if labels.shape not in (per_sample, (*per_sample, 1)):
            raise CalibrationDataError(
                f"{where} has shape {list(labels.shape)}; the model's output "
                f"{list(predictions.shape)} needs one class id per row: {list(per_sample)}"
            )
        classes = predictions.shape[-1]
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise CalibrationDataError(
                f"{where} holds class ids {int(labels.min())}..{int(labels.max())}, but the "
                f"model's output has {classes} classes (ids 0..{classes - 1})"
            )
        return
    if _without_trailing_ones(labels.shape) != _without_trailing_ones(predictions.shape):
        raise CalibrationDataError(
            f"{where} has shape {list(labels.shape)}; regression targets must match the "
            f"model's output {list(predictions.shape)}"
        )


def _without_trailing_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def evaluate_accuracy(
    reference: Outputs, candidate: Outputs, data: Dataset, task: Task
) -> AccuracyResult:
    """The task metric with labels, else fidelity to the original, on the first output."""
    import numpy as np

    fidelity = [
        OutputFidelity(
            name=name,
            cosine_similarity=_mean_cosine(values, candidate[name]),
            max_abs_error=float(np.max(np.abs(values - candidate[name]))) if values.size else 0.0,
        )
        for name, values in reference.items()
    ]
    judged = fidelity[0]
    expected, actual = reference[judged.name], candidate[judged.name]
    unit: Literal["pp", "mse"] = "pp"
    if data.labels is not None and task == "classification":
        classes = data.labels.reshape(-1)
        original = 100.0 * float(np.mean(expected.argmax(axis=-1).reshape(-1) == classes))
        optimized = 100.0 * float(np.mean(actual.argmax(axis=-1).reshape(-1) == classes))
        metric = "top1_accuracy"
    elif data.labels is not None:
        targets = np.asarray(data.labels, dtype=np.float64).reshape(expected.shape)
        original = -float(np.mean((expected - targets) ** 2))
        optimized = -float(np.mean((actual - targets) ** 2))
        metric, unit = "negative_mse", "mse"
    elif task == "classification":
        original = 100.0
        optimized = 100.0 * float(np.mean(expected.argmax(axis=-1) == actual.argmax(axis=-1)))
        metric = "top1_agreement"
    else:
        original, optimized = 100.0, 100.0 * judged.cosine_similarity
        metric = "cosine_similarity"
    return AccuracyResult(
        metric=metric,
        output=judged.name,
        original=original,
        optimized=optimized,
        change_pp=optimized - original,
        change_unit=unit,
        cosine_similarity=judged.cosine_similarity,
        max_abs_error=judged.max_abs_error,
        samples=data.samples,
        outputs=fidelity,
    )


def _mean_cosine(reference: npt.NDArray[np.floating], candidate: npt.NDArray[np.floating]) -> float:
    """Mean cosine over output vectors (the last axis), e.g. per token or per embedding."""
    import numpy as np

    if reference.ndim == 1:  # one scalar per sample: compare the whole output vector
        reference, candidate = reference[None, :], candidate[None, :]
    left = reference.reshape(-1, reference.shape[-1])
    right = candidate.reshape(-1, candidate.shape[-1])
    norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
    dots = np.sum(left * right, axis=1)
    both_zero = norms == 0
    cosines = np.where(both_zero, 1.0, dots / np.where(both_zero, 1.0, norms))
    value = float(np.mean(cosines))
    return value if math.isfinite(value) else -1.0
