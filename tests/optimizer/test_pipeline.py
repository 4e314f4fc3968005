"""``optimize()`` end to end on tiny models: results, cache, atomic output, errors, and how
``auto`` chooses."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

from aideploy.errors import InputError, NotSupportedError
from aideploy.schema import OptimizationMethod, OptimizationRequest
from optimizer import (
    CalibrationDataError,
    OptimizationCancelledError,
    OptimizationFailedError,
    ProgressEvent,
    optimize,
)
from optimizer.data import Dataset, load_dataset
from optimizer.measure import AccuracyResult, LatencyStats, OutputFidelity
from optimizer.model_info import inspect_model
from optimizer.pipeline import CandidateReport

RunOnnx = Callable[..., np.ndarray]
QUICK = 0.05
"""Latency budget for tests that check what is built rather than how fast it runs."""


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
    first = optimize(
        mlp_onnx,
        _request("quantization", precision="fp16"),
        tmp_path,
        data=mlp_data,
        latency_budget_seconds=QUICK,
    )
    again = optimize(
        mlp_onnx,
        _request("quantization", precision="fp16"),
        tmp_path,
        data=mlp_data,
        latency_budget_seconds=QUICK,
    )
    assert not first.cached
    assert again.cached
    assert again.artifact == first.artifact
    other = optimize(
        mlp_onnx,
        _request("quantization", precision="int8"),
        tmp_path,
        data=mlp_data,
        latency_budget_seconds=QUICK,
    )
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
    result = optimize(mlp_onnx, _request("quantization"), tmp_path, latency_budget_seconds=QUICK)
    assert result.data_generated
    assert result.accuracy_metric == "top1_agreement"
    assert any("generated" in note for note in result.notes)


def test_embedding_outputs_use_cosine(transformer_block_onnx: Path, tmp_path: Path) -> None:
    result = optimize(
        transformer_block_onnx,
        _request("quantization", precision="int4"),
        tmp_path,
        latency_budget_seconds=QUICK,
    )
    assert result.accuracy_metric == "cosine_similarity"
    assert 0.9 < result.accuracy.cosine_similarity <= 1.0


def test_pruning_then_quantize(cnn_onnx: Path, cnn_data: Path, tmp_path: Path) -> None:
    result = optimize(
        cnn_onnx,
        _request("pruning", sparsity=0.5, then_quantize=True),
        tmp_path,
        data=cnn_data,
        latency_budget_seconds=QUICK,
    )
    assert result.precision == "int8-static"  # convolutions get QDQ, never ConvInteger
    assert result.candidates[0].name == "pruned-0.5+int8-static"
    assert any("structured pruning removed" in note for note in result.notes)


def test_auto_meets_targets_and_names_what_it_misses(
    cnn_onnx: Path, cnn_data: Path, tmp_path: Path
) -> None:
    result = optimize(
        cnn_onnx, _request("auto", threads=1), tmp_path, data=cnn_data, latency_budget_seconds=QUICK
    )
    names = [candidate.name for candidate in result.candidates]
    assert {"int8-static", "fp16", "fp32-graph"} <= set(names)
    assert result.targets_met  # the only target is auto's default accuracy budget
    chosen = result.candidates[0]
    assert chosen.targets_met
    # Never slower than the original: the fp32 graph fallback is the only exception.
    assert chosen.name == "fp32-graph" or all(s.ratio_to_first <= 1.0 for s in chosen.latency)
    impossible = OptimizationRequest.model_validate(
        {"method": "auto", "target_size": "10B", "metadata": {"batch_sizes": [1]}}
    )
    missed = optimize(cnn_onnx, impossible, tmp_path, data=cnn_data, latency_budget_seconds=QUICK)
    assert not missed.targets_met
    assert not missed.candidates[0].targets_met
    assert any(item.startswith("target_size 10B") for item in missed.unmet_targets)


def test_auto_keeps_sensitive_layers_for_an_accuracy_floor(
    transformer_block_onnx: Path, tmp_path: Path
) -> None:
    result = optimize(
        transformer_block_onnx,
        _request("auto", max_accuracy_drop=0.0, precision="int8"),
        tmp_path,
        latency_budget_seconds=QUICK,
    )
    assert any(note.startswith("sensitivity scan") for note in result.notes)
    assert any("mixed" in candidate.name for candidate in result.candidates)


def test_distillation_is_not_supported(mlp_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not supported yet"):
        _request("distillation")
    # The optimizer refuses it too, with the same words, for a request built without validation.
    unvalidated = OptimizationRequest.model_construct(
        method=OptimizationMethod.DISTILLATION, target_size=None, target_latency=None, metadata={}
    )
    with pytest.raises(NotSupportedError, match="'distillation' is not supported yet"):
        optimize(mlp_onnx, unvalidated, tmp_path)
    assert list(tmp_path.iterdir()) == []


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


# --- inputs the audit found crashing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "metadata"),
    [
        ("graph", {}),
        ("quantization", {"precision": "int8"}),
        ("quantization", {"precision": "int8-static"}),
        ("pruning", {"sparsity": 0.5}),
        ("auto", {}),
    ],
)
def test_external_data_models_optimize_with_every_method(
    mlp_external: Path,
    mlp_data: Path,
    tmp_path: Path,
    run_onnx: RunOnnx,
    method: str,
    metadata: dict[str, Any],
) -> None:
    weights = mlp_external.parent / "mlp_ext.bin"
    before = (_digest(mlp_external), _digest(weights))
    result = optimize(
        mlp_external,
        _request(method, **metadata),
        tmp_path,
        data=mlp_data,
        latency_budget_seconds=QUICK,
    )
    assert (_digest(mlp_external), _digest(weights)) == before
    assert result.original_size_bytes == mlp_external.stat().st_size + weights.stat().st_size
    onnx.checker.check_model(str(result.artifact))
    x = np.ones((3, 16), np.float32)
    assert run_onnx(result.artifact, x=x).shape == (3, 4)
    assert result.accuracy_metric == "top1_accuracy"


def test_torchscript_token_model_converts_with_integer_inputs(
    torchscript_tokens: tuple[Path, Path], tmp_path: Path, run_onnx: RunOnnx
) -> None:
    model, data = torchscript_tokens
    result = optimize(
        model, _request("quantization"), tmp_path, data=data, latency_budget_seconds=QUICK
    )
    assert any("converted from torchscript" in note for note in result.notes)
    # A Linear head on a converted model (outputs named output_N) is judged as a classifier.
    assert result.accuracy_metric == "top1_agreement"
    converted = inspect_model(result.artifact)
    assert [(s.name, s.datatype, s.shape) for s in converted.inputs] == [
        ("input_ids", "INT64", [-1, -1]),
        ("attention_mask", "INT64", [-1, -1]),
    ]
    ids = np.arange(21, dtype=np.int64).reshape(3, 7)  # another batch and sequence length
    logits = run_onnx(result.artifact, input_ids=ids, attention_mask=np.ones_like(ids))
    assert logits.shape == (3, 5)


def test_generated_ids_stay_inside_a_small_vocabulary(
    small_vocab_onnx: Path, tmp_path: Path
) -> None:
    result = optimize(
        small_vocab_onnx, _request("quantization"), tmp_path, latency_budget_seconds=QUICK
    )
    assert result.data_generated
    assert result.accuracy_metric == "cosine_similarity"


def test_ids_outside_the_vocabulary_are_a_data_error(
    small_vocab_onnx: Path, tmp_path: Path
) -> None:
    data = tmp_path / "ids.npz"
    np.savez(data, input_ids=np.arange(60, dtype=np.int64).reshape(6, 10))
    with pytest.raises(CalibrationDataError, match=r"ids from 0 to 59.*table of 50 rows"):
        optimize(small_vocab_onnx, _request("graph"), tmp_path / "out", data=data)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_output_must_be_a_folder(mlp_onnx: Path, tmp_path: Path) -> None:
    file = tmp_path / "taken"
    file.write_text("")
    with pytest.raises(InputError, match=r"output: .* is a file"):
        optimize(mlp_onnx, _request("graph"), file)


# --- notes and verification -------------------------------------------------------------------


def test_dynamic_int8_on_convolutions_says_they_stay_fp32(cnn_onnx: Path, tmp_path: Path) -> None:
    result = optimize(
        cnn_onnx, _request("quantization", precision="int8"), tmp_path, latency_budget_seconds=QUICK
    )
    assert any("left the 2 convolution(s) in fp32" in note for note in result.notes)


def test_static_int8_without_data_says_it_calibrated_on_generated_inputs(
    cnn_onnx: Path, tmp_path: Path
) -> None:
    result = optimize(
        cnn_onnx,
        _request("quantization", precision="int8-static"),
        tmp_path,
        latency_budget_seconds=QUICK,
    )
    assert result.data_generated
    assert any("calibrated on inputs generated" in note for note in result.notes)


def _break_fp16(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Make the fp16 pass crash, or write a model that fails ``onnx.checker``."""
    from optimizer.passes.quantize import Float16

    real = Float16.run

    def broken(self: Float16, artifact: Path, out_dir: Path) -> Path:
        if how == "crash":
            raise RuntimeError("converter exploded\nsecond line")
        path = real(self, artifact, out_dir)
        model = onnx.load(str(path))
        model.graph.node[0].input[0] = "nowhere"  # an undefined input
        onnx.save(model, str(path))
        return path

    monkeypatch.setattr(Float16, "run", broken)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("invalid", "failed verification"),
        ("crash", "the fp16 pass failed on this model: converter exploded$"),
    ],
)
def test_a_broken_candidate_is_never_reported(
    mlp_onnx: Path,
    mlp_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    message: str,
) -> None:
    _break_fp16(monkeypatch, how)
    with pytest.raises(OptimizationFailedError, match=message):
        optimize(
            mlp_onnx,
            _request("quantization", precision="fp16"),
            tmp_path,
            data=mlp_data,
            latency_budget_seconds=QUICK,
        )
    assert not [path for path in tmp_path.iterdir() if not path.name.startswith(".")]
    result = optimize(
        mlp_onnx, _request("auto"), tmp_path, data=mlp_data, latency_budget_seconds=QUICK
    )
    assert "fp16" not in [candidate.name for candidate in result.candidates]
    assert any(note.startswith("skipped candidate fp16") for note in result.notes)


# --- auto's choice on synthetic measurements --------------------------------------------------


def _report(
    name: str, size: int, ratio: float, change: float = 0.0, mse: float | None = None
) -> CandidateReport:
    """A measured candidate; with ``mse`` its metric is negative_mse around that original MSE."""
    latency = [
        LatencyStats(batch_size=b, p50_ms=ratio, p90_ms=ratio, runs=15, ratio_to_first=ratio)
        for b in (1, 8)
    ]
    original = [LatencyStats(batch_size=b, p50_ms=1.0, p90_ms=1.0, runs=15) for b in (1, 8)]
    return CandidateReport(
        name=name,
        precision=None,
        passes=[],
        size_bytes=size,
        size_reduction_percentage=100.0 * (1 - size / 1000),
        latency=latency,
        original_latency=original,
        latency_reduction_percentage=100.0 * (1 - ratio),
        accuracy=AccuracyResult(
            metric="cosine_similarity" if mse is None else "negative_mse",
            output="y",
            original=100.0 if mse is None else -mse,
            optimized=(100.0 if mse is None else -mse) + change,
            change_pp=change,
            change_unit="pp" if mse is None else "mse",
            cosine_similarity=1.0 + change / 100,
            max_abs_error=0.0,
            samples=8,
            outputs=[OutputFidelity(name="y", cosine_similarity=1.0, max_abs_error=0.0)],
        ),
        targets_met=True,
        unmet_targets=[],
    )


def _choose(mlp_onnx: Path, tmp_path: Path, reports: list[CandidateReport], **request: Any) -> str:
    from optimizer.pipeline import _Candidate, _choose, _Context, _unmet_targets

    parsed = OptimizationRequest.model_validate({"method": "auto", **request})
    context = _Context(
        request=parsed,
        options=parsed.options,
        work=tmp_path,
        original=mlp_onnx,
        base=mlp_onnx,
        data=Dataset(inputs={"x": np.zeros((1, 16), np.float32)}),
        task="embedding",
        threads=1,
        reference={},
        progress=None,
        cancel=None,
    )
    reports = [
        report.model_copy(
            update={
                "unmet_targets": (unmet := _unmet_targets(context, report)),
                "targets_met": not unmet,
            }
        )
        for report in reports
    ]
    candidates = [_Candidate(report.name, None, []) for report in reports]
    return _choose(context, candidates, reports).name


def test_auto_never_ships_a_slower_model(mlp_onnx: Path, tmp_path: Path) -> None:
    size = mlp_onnx.stat().st_size
    fp16 = _report("fp16", size // 2, ratio=1.1)  # smallest, accurate, but 10% slower
    int8 = _report("int8", size // 3, ratio=1.05, change=-0.2)  # smaller still, also slower
    fallback = _report("fp32-graph", size, ratio=1.02)  # noise: the fallback never loses
    assert _choose(mlp_onnx, tmp_path, [fp16, int8, fallback]) == "fp32-graph"
    fast = _report("int8", size // 3, ratio=0.7, change=-0.3)
    assert _choose(mlp_onnx, tmp_path, [fp16, fast, fallback]) == "int8"
    # Even when the targets cannot all be met, the closest is chosen among the not-slower ones.
    assert _choose(mlp_onnx, tmp_path, [fp16, fallback], target_size="10B") == "fp32-graph"


def test_auto_prefers_accuracy_among_candidates_that_meet_the_targets(
    mlp_onnx: Path, tmp_path: Path
) -> None:
    size = mlp_onnx.stat().st_size
    reports = [
        _report("int4", size // 6, ratio=0.8, change=-0.9),
        _report("int8", size // 4, ratio=0.6, change=-0.1),
        _report("fp32-graph", size, ratio=1.0),
    ]
    target = f"{size // 3}B"
    assert _choose(mlp_onnx, tmp_path, reports, target_size=target) == "int8"
    # Without targets the smallest wins while it stays within the default accuracy budget...
    assert _choose(mlp_onnx, tmp_path, reports) == "int4"
    # ...and a candidate losing more than the budget is not feasible at all.
    reports[0] = _report("int4", size // 6, ratio=0.8, change=-5.0)
    assert _choose(mlp_onnx, tmp_path, reports) == "int8"


def test_auto_budget_for_mse_is_a_percentage_of_the_original_error(
    mlp_onnx: Path, tmp_path: Path
) -> None:
    size = mlp_onnx.stat().st_size
    fallback = _report("fp32-graph", size, ratio=1.0, mse=10.0)
    within = _report("int8", size // 4, ratio=0.7, change=-0.05, mse=10.0)  # 0.5% worse
    beyond = _report("int8", size // 4, ratio=0.7, change=-0.5, mse=10.0)  # 5% worse
    assert _choose(mlp_onnx, tmp_path, [within, fallback]) == "int8"
    assert _choose(mlp_onnx, tmp_path, [beyond, fallback]) == "fp32-graph"
