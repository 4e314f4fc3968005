"""The measurement harness: size on disk, latency and accuracy of an original and an optimized
model, measured the same way so the difference is the optimization and not the harness.

Latency runs both models interleaved (A, B, B, A, ...) on sessions with a fixed intra-op thread
count, after warm-up, until the median is stable, so a noisy neighbour slows both alike.
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
from optimizer.errors import OptimizationFailedError
from optimizer.model_info import external_data_files, load_onnx

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import onnxruntime

__all__ = [
    "AccuracyResult",
    "LatencyStats",
    "Task",
    "artifact_size",
    "compare_latency",
    "evaluate_accuracy",
    "make_session",
    "verify_artifact",
]

Task = Literal["classification", "embedding", "regression"]
_CLASSIFIER_OUTPUT = re.compile(r"logit|prob|class|label|score", re.IGNORECASE)
_EVAL_CHUNK = 64


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


class AccuracyResult(BaseModel):
    """Quality of a candidate against the task or the original; metrics in percent."""

    model_config = ConfigDict(frozen=True)

    metric: str
    """``top1_accuracy``, ``negative_mse``, ``top1_agreement`` or ``cosine_similarity``."""
    original: float
    optimized: float
    change_pp: float
    """Percentage points of ``metric``, negative when worse."""
    cosine_similarity: float
    """Mean cosine similarity of the optimized outputs to the original's, in [-1, 1]."""
    max_abs_error: float
    samples: int


def artifact_size(path: Path) -> int:
    """Bytes on disk of an ONNX model including its external data files."""
    files = external_data_files(load_onnx(path), path.parent)
    return path.stat().st_size + sum(file.stat().st_size for file in files)


def make_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    """A CPU session with a fixed thread count and default (full) online optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
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
    budget_seconds: float = 4.0,
    should_stop: Callable[[], None] | None = None,
) -> list[list[LatencyStats]]:
    """Latency of every session at every batch size, interleaved; ``result[session][batch]``.

    Runs continue past ``min_runs`` until ``budget_seconds`` (per batch size) or ``max_runs``;
    the order alternates each round so neither model always runs on a warmer cache. Each
    session's ``ratio_to_first`` compares it with the first session round by round.
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
        while round_index < max_runs and (
            round_index < min_runs or time.perf_counter() - started < budget_seconds
        ):
            order = range(len(sessions)) if round_index % 2 == 0 else reversed(range(len(sessions)))
            for index in order:
                begin = time.perf_counter()
                sessions[index].run(None, feed)
                timings[index].append((time.perf_counter() - begin) * 1000.0)
            round_index += 1
            if should_stop is not None and round_index % 10 == 0:
                should_stop()
        first = np.asarray(timings[0])
        for index, samples in enumerate(timings):
            values = np.asarray(samples)
            results[index].append(
                LatencyStats(
                    batch_size=batch_size,
                    p50_ms=float(np.median(values)),
                    p90_ms=float(np.percentile(values, 90)),
                    runs=len(samples),
                    ratio_to_first=float(np.median(values / first)),
                )
            )
    return results


def run_all(session: onnxruntime.InferenceSession, data: Dataset) -> npt.NDArray[np.floating]:
    """The first output over the whole dataset, in chunks, as float64."""
    import numpy as np

    chunks = []
    for start in range(0, data.samples, _EVAL_CHUNK):
        size = min(_EVAL_CHUNK, data.samples - start)
        chunks.append(np.asarray(session.run(None, data.batch(size, start))[0], dtype=np.float64))
    return np.concatenate(chunks)


def infer_task(output_name: str, output_shape: list[int] | None, data: Dataset) -> Task:
    """Classification when labels are class ids or the output is named like logits."""
    import numpy as np

    if data.labels is not None:
        return "classification" if np.issubdtype(data.labels.dtype, np.integer) else "regression"
    rank_two = output_shape is None or len(output_shape) == 2
    return "classification" if rank_two and _CLASSIFIER_OUTPUT.search(output_name) else "embedding"


def evaluate_accuracy(
    reference: npt.NDArray[np.floating],
    candidate: npt.NDArray[np.floating],
    data: Dataset,
    task: Task,
) -> AccuracyResult:
    """The task metric with labels, else fidelity to the original's outputs."""
    import numpy as np

    cosine = _mean_cosine(reference, candidate)
    max_abs = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    if data.labels is not None and task == "classification":
        classes = data.labels.reshape(-1)
        original = 100.0 * float(np.mean(reference.argmax(axis=-1).reshape(-1) == classes))
        optimized = 100.0 * float(np.mean(candidate.argmax(axis=-1).reshape(-1) == classes))
        metric = "top1_accuracy"
    elif data.labels is not None:
        targets = np.asarray(data.labels, dtype=np.float64).reshape(reference.shape)
        original = -float(np.mean((reference - targets) ** 2))
        optimized = -float(np.mean((candidate - targets) ** 2))
        metric = "negative_mse"
    elif task == "classification":
        original = 100.0
        optimized = 100.0 * float(np.mean(reference.argmax(axis=-1) == candidate.argmax(axis=-1)))
        metric = "top1_agreement"
    else:
        original, optimized, metric = 100.0, 100.0 * cosine, "cosine_similarity"
    return AccuracyResult(
        metric=metric,
        original=original,
        optimized=optimized,
        change_pp=optimized - original,
        cosine_similarity=cosine,
        max_abs_error=max_abs,
        samples=data.samples,
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
