"""The measurement harness on controlled inputs: interleaved, paired latency on a fake clock;
accuracy over every output with the right units; labels checked against the output; the task
guessed from the graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optimizer import CalibrationDataError, measure
from optimizer.data import Dataset
from optimizer.measure import check_labels, compare_latency, evaluate_accuracy, infer_task


class _Clock:
    """Stands in for the ``time`` module: only fake sessions advance it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _Session:
    """Each run costs ``cost(call)`` seconds on the shared clock, where ``call`` counts every run
    of every session: a load that drifts over time, as on a shared machine."""

    def __init__(self, name: str, clock: _Clock, log: list[str], cost: Any) -> None:
        self.name, self.clock, self.log, self.cost = name, clock, log, cost

    def run(self, _outputs: object, _feed: object) -> None:
        self.clock.now += self.cost(len(self.log))
        self.log.append(self.name)


def _harness(monkeypatch: pytest.MonkeyPatch) -> tuple[_Clock, list[str]]:
    clock = _Clock()
    monkeypatch.setattr(measure, "time", clock)
    return clock, []


_DATA = Dataset(inputs={"x": np.zeros((4, 2), np.float32)})


def test_latency_is_interleaved_and_paired(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, log = _harness(monkeypatch)

    def load(call: int) -> float:
        return 0.001 * (1 + call // 2)  # grows every two runs: one round of two sessions

    original = _Session("a", clock, log, load)
    twice_as_slow = _Session("b", clock, log, lambda call: 2 * load(call))
    first, second = compare_latency(
        [original, twice_as_slow], _DATA, [1], warmup=1, min_runs=10, budget_seconds=0.05
    )
    rounds = log[2:]  # after one warm-up run each
    assert rounds[:8] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    # Both runs of a round see the same load, so the paired ratio is exactly 2 even though
    # the load grew many times over; a harness timing one model after the other would not be.
    assert second[0].ratio_to_first == pytest.approx(2.0)
    assert second[0].stable
    assert first[0].ratio_to_first == 1.0
    assert first[0].runs == second[0].runs >= 10
    assert second[0].p50_ms > first[0].p50_ms


def test_an_unstable_median_gets_more_rounds_and_is_flagged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, log = _harness(monkeypatch)
    original = _Session("a", clock, log, lambda call: 0.001)

    def jumpy(call: int) -> float:  # twice as slow, then three times once the budget is spent
        return 0.002 if clock.now < 0.04 else 0.003

    stats = compare_latency(
        [original, _Session("b", clock, log, jumpy)],
        _DATA,
        [1],
        warmup=1,
        min_runs=4,
        budget_seconds=0.05,
    )
    assert not stats[1][0].stable
    assert clock.now >= 2 * 0.05 - 0.01  # kept measuring up to twice the budget


def _outputs(**arrays: Any) -> dict[str, Any]:
    return {name: np.asarray(value, dtype=np.float64) for name, value in arrays.items()}


def test_accuracy_judges_the_first_output_and_reports_every_output() -> None:
    reference = _outputs(
        logits=[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], hidden=np.ones((4, 3))
    )
    candidate = _outputs(
        logits=[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], hidden=-np.ones((4, 3))
    )
    result = evaluate_accuracy(reference, candidate, _DATA, "classification")
    assert (result.metric, result.output, result.change_unit) == ("top1_agreement", "logits", "pp")
    assert result.change_pp == pytest.approx(-75.0)
    assert [fidelity.name for fidelity in result.outputs] == ["logits", "hidden"]
    assert result.outputs[1].cosine_similarity == pytest.approx(-1.0)
    assert result.outputs[1].max_abs_error == pytest.approx(2.0)
    cosine = evaluate_accuracy(
        reference, _outputs(logits=[[2.0, 0.0]] * 4, hidden=np.ones((4, 3))), _DATA, "embedding"
    )
    assert cosine.metric == "cosine_similarity"
    assert cosine.change_pp == pytest.approx(-50.0)  # half the rows point the other way


def test_mse_changes_are_in_squared_units_not_points() -> None:
    labelled = Dataset(inputs={"x": np.zeros((2, 1), np.float32)}, labels=np.array([[1.0], [3.0]]))
    result = evaluate_accuracy(
        _outputs(y=[[1.0], [3.0]]), _outputs(y=[[1.5], [3.0]]), labelled, "regression"
    )
    assert (result.metric, result.change_unit) == ("negative_mse", "mse")
    assert result.change_pp == pytest.approx(-0.125)
    assert result.describe_change() == "-0.125 mse"


@pytest.mark.parametrize(
    ("labels", "task", "message"),
    [
        (np.zeros((4, 3), np.int64), "classification", r"shape \[4, 3\].*\[4\]"),
        (np.array([0, 1, 2, 5]), "classification", r"class ids 0\.\.5.*5 classes"),
        (np.zeros(4, np.float32), "classification", "integer class ids"),
        (np.zeros((4, 3), np.float32), "regression", r"shape \[4, 3\].*\[4, 5\]"),
    ],
)
def test_labels_must_fit_the_output(labels: Any, task: Any, message: str) -> None:
    data = Dataset(inputs={"x": np.zeros((4, 2), np.float32)}, labels=labels, source="d.npz")
    with pytest.raises(CalibrationDataError, match=message):
        check_labels(data, np.zeros((4, 5)), task)


def test_fitting_labels_pass() -> None:
    ids = Dataset(inputs={"x": np.zeros((4, 2))}, labels=np.array([0, 4, 1, 2]))
    check_labels(ids, np.zeros((4, 5)), "classification")
    column = Dataset(inputs={"x": np.zeros((4, 2))}, labels=np.zeros((4, 1), np.float32))
    check_labels(column, np.zeros((4,)), "regression")


def _graph_model(tmp_path: Path, last: str, output: str, width: int) -> Path:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"])]
    if last == "Gemm":
        nodes = [helper.make_node("Gemm", ["x", "w"], [output])]
    elif last == "Softmax":
        nodes.append(helper.make_node("Softmax", ["h"], [output]))
    else:
        nodes.append(helper.make_node(last, ["h"], [output]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(np.ones((3, width), np.float32), "w")],
    )
    path = tmp_path / f"{last}-{output}.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize(
    ("last", "output", "width", "task"),
    [
        ("Gemm", "output_0", 5, "classification"),  # a converted TorchScript classifier
        ("Softmax", "output_0", 5, "classification"),
        ("Relu", "logits", 5, "classification"),
        ("Gemm", "sentence_embedding", 5, "embedding"),
        ("Relu", "output_0", 5, "embedding"),
        ("Gemm", "output_0", 1, "embedding"),  # one column: a regressor, never argmax
    ],
)
def test_task_is_guessed_from_the_graph(
    tmp_path: Path, last: str, output: str, width: int, task: str
) -> None:
    guessed, reason = infer_task(_graph_model(tmp_path, last, output, width), _DATA)
    assert guessed == task
    assert output in reason
