"""``optimize()`` end to end on tiny models: results, cache, atomic output, errors."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from aideploy.errors import InputError, NotSupportedError
from aideploy.schema import OptimizationRequest
from optimizer import CalibrationDataError, OptimizationCancelledError, ProgressEvent, optimize
from optimizer.data import generate_dataset, load_dataset
from optimizer.measure import evaluate_accuracy
from optimizer.model_info import inspect_model

RunOnnx = Callable[..., np.ndarray]


def _request(method: str, **metadata: object) -> OptimizationRequest:
    return OptimizationRequest.model_validate(
        {"method": method, "metadata": {"batch_sizes": [1, 4], **metadata}}
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_quantization_result_is_measured_and_verified(
    mlp_onnx: Path, mlp_data: Path, tmp_path: Path, run_onnx: RunOnnx
) -> None:
    before = _digest(mlp_onnx)
    events: list[ProgressEvent] = []
    result = optimize(
        mlp_onnx, _request("quantization"), tmp_path, data=mlp_data, progress=events.append
    )
    assert _digest(mlp_onnx) == before
    assert result.artifact.is_file()
    assert result.report.is_file()
    assert result.artifact.parent.parent == tmp_path
    assert result.precision == "int8"
    assert result.accuracy_metric == "top1_accuracy"
    assert result.size_reduction_percentage > 40
    assert [stats.batch_size for stats in result.optimized_latency] == [1, 4]
    assert all(stats.runs >= 15 for stats in result.optimized_latency)
    assert result.original_size_bytes == mlp_onnx.stat().st_size
    assert events
    assert events[-1].step == events[-1].total
    x = np.ones((2, 16), np.float32)
    assert run_onnx(result.artifact, x=x).shape == (2, 4)


def test_same_request_reuses_the_cache(mlp_onnx: Path, mlp_data: Path, tmp_path: Path) -> None:
    first = optimize(mlp_onnx, _request("quantization", precision="fp16"), tmp_path, data=mlp_data)
    again = optimize(mlp_onnx, _request("quantization", precision="fp16"), tmp_path, data=mlp_data)
    assert not first.cached
    assert again.cached
    assert again.artifact == first.artifact
    other = optimize(mlp_onnx, _request("quantization", precision="int8"), tmp_path, data=mlp_data)
    assert other.artifact != first.artifact
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".tmp")]


def test_cancel_leaves_no_output(mlp_onnx: Path, tmp_path: Path) -> None:
    cancel = threading.Event()

    def cancel_soon(event: ProgressEvent) -> None:
        if event.step >= 2:
            cancel.set()

    with pytest.raises(OptimizationCancelledError):
        optimize(mlp_onnx, _request("quantization"), tmp_path, progress=cancel_soon, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_without_data_fidelity_is_used_and_noted(mlp_onnx: Path, tmp_path: Path) -> None:
    result = optimize(mlp_onnx, _request("quantization"), tmp_path)
    assert result.data_generated
    assert result.accuracy_metric == "top1_agreement"
    assert any("generated" in note for note in result.notes)


def test_embedding_outputs_use_cosine(transformer_block_onnx: Path, tmp_path: Path) -> None:
    result = optimize(transformer_block_onnx, _request("quantization", precision="int4"), tmp_path)
    assert result.accuracy_metric == "cosine_similarity"
    assert 0.9 < result.accuracy.cosine_similarity <= 1.0


def test_pruning_then_quantize(cnn_onnx: Path, cnn_data: Path, tmp_path: Path) -> None:
    result = optimize(
        cnn_onnx, _request("pruning", sparsity=0.5, then_quantize=True), tmp_path, data=cnn_data
    )
    assert result.precision == "int8-static"  # convolutions get QDQ, never ConvInteger
    assert result.candidates[0].name == "pruned-0.5+int8-static"
    assert any("structured pruning removed" in note for note in result.notes)


def test_auto_meets_targets_and_names_what_it_misses(
    cnn_onnx: Path, cnn_data: Path, tmp_path: Path
) -> None:
    result = optimize(cnn_onnx, _request("auto", threads=1), tmp_path, data=cnn_data)
    names = [candidate.name for candidate in result.candidates]
    assert {"int8-static", "fp16", "fp32-graph"} <= set(names)
    for candidate in result.candidates[1:]:
        assert candidate.name != names[0]
    impossible = OptimizationRequest.model_validate(
        {"method": "auto", "target_size": "10B", "metadata": {"batch_sizes": [1]}}
    )
    missed = optimize(cnn_onnx, impossible, tmp_path, data=cnn_data)
    assert not missed.targets_met
    assert any(item.startswith("target_size 10B") for item in missed.unmet_targets)


def test_auto_keeps_sensitive_layers_for_an_accuracy_floor(
    transformer_block_onnx: Path, tmp_path: Path
) -> None:
    result = optimize(
        transformer_block_onnx, _request("auto", max_accuracy_drop=0.0, precision="int8"), tmp_path
    )
    assert any(note.startswith("sensitivity scan") for note in result.notes)
    assert any("mixed" in candidate.name for candidate in result.candidates)


def test_distillation_is_not_supported(mlp_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(NotSupportedError, match="not supported yet"):
        optimize(mlp_onnx, _request("distillation"), tmp_path)


def test_precision_only_with_quantization(mlp_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="precision"):
        optimize(mlp_onnx, _request("graph", precision="int8"), tmp_path)


def test_data_names_and_shapes_are_checked(mlp_onnx: Path, tmp_path: Path) -> None:
    signature = inspect_model(mlp_onnx).inputs
    wrong_name = tmp_path / "name.npz"
    np.savez(wrong_name, pixels=np.ones((3, 16), np.float32))
    with pytest.raises(CalibrationDataError, match=r"missing \['x'\], unexpected \['pixels'\]"):
        load_dataset(wrong_name, signature)
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, x=np.ones((3, 15), np.float32))
    with pytest.raises(CalibrationDataError, match=r"expects \[N, 16\]"):
        load_dataset(wrong_shape, signature)
    wrong_count = tmp_path / "count.npz"
    np.savez(wrong_count, x=np.ones((3, 16), np.float32), labels=np.zeros(2, np.int64))
    with pytest.raises(CalibrationDataError, match="same number of samples"):
        load_dataset(wrong_count, signature)
    not_npz = tmp_path / "bad.npz"
    not_npz.write_text("nope")
    with pytest.raises(CalibrationDataError, match="not a readable"):
        optimize(mlp_onnx, _request("quantization"), tmp_path / "out", data=not_npz)


def test_accuracy_metrics() -> None:
    data = generate_dataset(inspect_model_signature())
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    flipped = reference[:, ::-1].copy()
    flipped[0] = reference[0]
    agreement = evaluate_accuracy(reference, flipped, data, "classification")
    assert agreement.metric == "top1_agreement"
    assert agreement.change_pp == pytest.approx(-75.0)
    cosine = evaluate_accuracy(reference, reference * 2, data, "embedding")
    assert cosine.metric == "cosine_similarity"
    assert cosine.change_pp == pytest.approx(0.0)
    assert cosine.max_abs_error == pytest.approx(1.0)


def inspect_model_signature() -> list:  # type: ignore[type-arg]
    from optimizer.model_info import TensorSpec

    return [TensorSpec(name="x", datatype="FP32", shape=[-1, 2])]


def test_latency_is_interleaved_and_paired(mlp_onnx: Path) -> None:
    from optimizer.measure import compare_latency, make_session

    data = generate_dataset(inspect_model(mlp_onnx).inputs, samples=4)
    sessions = [make_session(mlp_onnx, 1), make_session(mlp_onnx, 1)]
    first, second = compare_latency(sessions, data, [1, 3], min_runs=20, budget_seconds=0.1)
    assert [stats.batch_size for stats in first] == [1, 3]
    assert all(stats.ratio_to_first == 1.0 and stats.runs >= 20 for stats in first)
    assert all(0.3 < stats.ratio_to_first < 3.0 for stats in second)
    assert all(stats.p90_ms >= stats.p50_ms > 0 for stats in [*first, *second])
