"""Each pass on a tiny model: it writes a new valid file, leaves the input alone and does what
its name says (smaller weights, QDQ not ConvInteger, fp32 I/O, fewer neurons...)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

from optimizer.data import load_dataset
from optimizer.errors import UnsupportedModelError
from optimizer.model_info import inspect_model
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
    gemm_to_matmul,
)

RunOnnx = Callable[..., np.ndarray]


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _params(path: Path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def test_graph_pass_writes_a_new_equivalent_model(
    mlp_onnx: Path, tmp_path: Path, run_onnx: RunOnnx
) -> None:
    before = _digest(mlp_onnx)
    out = GraphOptimization(GraphOptimizationConfig(level="extended")).run(mlp_onnx, tmp_path)
    assert out != mlp_onnx
    assert _digest(mlp_onnx) == before
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(out, x=x), run_onnx(mlp_onnx, x=x), rtol=1e-5, atol=1e-5)


def test_pass_configs_are_validated() -> None:
    with pytest.raises(ValidationError):
        StructuredPruningConfig(sparsity=0.99)
    with pytest.raises(ValidationError):
        GraphOptimizationConfig(level="all")
    with pytest.raises(ValidationError):
        DynamicInt8Config(per_chanel=True)  # type: ignore[call-arg]


def test_gemm_to_matmul_is_equivalent(mlp_onnx: Path, tmp_path: Path, run_onnx: RunOnnx) -> None:
    model = gemm_to_matmul(onnx.load(str(mlp_onnx)))
    assert "Gemm" not in {node.op_type for node in model.graph.node}
    path = tmp_path / "matmul.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(path, x=x), run_onnx(mlp_onnx, x=x), rtol=1e-5, atol=1e-5)


def test_dynamic_int8_quantizes_linear_layers(
    mlp_onnx: Path, tmp_path: Path, run_onnx: RunOnnx
) -> None:
    out = DynamicInt8(DynamicInt8Config()).run(mlp_onnx, tmp_path)
    assert out.stat().st_size < 0.6 * mlp_onnx.stat().st_size
    assert _ops(out) & {"MatMulInteger", "DynamicQuantizeMatMul"}
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    assert np.abs(run_onnx(out, x=x) - run_onnx(mlp_onnx, x=x)).max() < 0.1


def test_dynamic_int8_leaves_convolutions_alone(cnn_onnx: Path, tmp_path: Path) -> None:
    out = DynamicInt8(DynamicInt8Config()).run(cnn_onnx, tmp_path)
    assert "ConvInteger" not in _ops(out)
    assert "Conv" in _ops(out)


def test_dynamic_int8_excluded_nodes_stay_fp32(
    transformer_block_onnx: Path, tmp_path: Path
) -> None:
    out = DynamicInt8(DynamicInt8Config(exclude_nodes=("ffn_out",))).run(
        transformer_block_onnx, tmp_path
    )
    names = {node.name: node.op_type for node in onnx.load(str(out)).graph.node}
    assert names["ffn_out"] == "MatMul"
    assert any(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op in names.values())


def test_static_int8_writes_qdq_for_convolutions(
    cnn_onnx: Path, cnn_data: Path, tmp_path: Path, run_onnx: RunOnnx
) -> None:
    data = load_dataset(cnn_data, inspect_model(cnn_onnx).inputs)
    out = StaticInt8(StaticInt8Config(calibration_samples=16), data).run(cnn_onnx, tmp_path)
    ops = _ops(out)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "ConvInteger" not in ops
    model = onnx.load(str(out))
    weights = {t.name: t.data_type for t in model.graph.initializer}
    quantized = [name for name in weights if name.endswith("weight_quantized")]
    assert quantized
    assert all(weights[name] == onnx.TensorProto.INT8 for name in quantized)
    x = data.batch(8)["x"]
    agreement = np.mean(run_onnx(out, x=x).argmax(1) == run_onnx(cnn_onnx, x=x).argmax(1))
    assert agreement >= 0.75


def test_fp16_keeps_fp32_inputs_and_outputs(
    mlp_onnx: Path, tmp_path: Path, run_onnx: RunOnnx
) -> None:
    out = Float16(Float16Config()).run(mlp_onnx, tmp_path)
    info = inspect_model(out)
    assert info.inputs[0].datatype == "FP32"
    assert info.outputs[0].datatype == "FP32"
    assert out.stat().st_size < 0.6 * mlp_onnx.stat().st_size
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(out, x=x), run_onnx(mlp_onnx, x=x), atol=1e-2)


def test_int4_uses_matmul_nbits(
    transformer_block_onnx: Path, tmp_path: Path, run_onnx: RunOnnx
) -> None:
    out = Int4WeightOnly(Int4WeightOnlyConfig(block_size=32)).run(transformer_block_onnx, tmp_path)
    assert "MatMulNBits" in _ops(out)
    x = np.random.default_rng(0).standard_normal((2, 5, 32)).astype(np.float32)
    reference, quantized = run_onnx(transformer_block_onnx, x=x), run_onnx(out, x=x)
    cosine = np.sum(reference * quantized) / np.linalg.norm(reference) / np.linalg.norm(quantized)
    assert cosine > 0.98


def test_pruning_shrinks_an_mlp_and_keeps_its_interface(
    mlp_onnx: Path, tmp_path: Path, run_onnx: RunOnnx
) -> None:
    pruning = StructuredPruning(StructuredPruningConfig(sparsity=0.5))
    out = pruning.run(mlp_onnx, tmp_path)
    assert pruning.summary is not None
    assert (
        pruning.summary.groups,
        pruning.summary.channels_before,
        pruning.summary.channels_after,
    ) == (2, 96, 48)
    assert _params(out) < 0.55 * _params(mlp_onnx)
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    assert run_onnx(out, x=x).shape == (3, 4)
    onnx.checker.check_model(str(out))


def test_pruning_a_transformer_mlp_block(
    transformer_block_onnx: Path, tmp_path: Path, run_onnx: RunOnnx
) -> None:
    groups = find_groups(onnx.load(str(transformer_block_onnx)))
    assert [group.producer.name for group in groups] == ["ffn_in"]
    out = StructuredPruning(StructuredPruningConfig(sparsity=0.25)).run(
        transformer_block_onnx, tmp_path
    )
    weights = {
        t.name.split("_pruned")[0]: list(t.dims) for t in onnx.load(str(out)).graph.initializer
    }
    assert weights["w1"] == [32, 96]
    assert weights["b1"] == [96]
    assert weights["w2"] == [96, 32]
    x = np.random.default_rng(0).standard_normal((2, 7, 32)).astype(np.float32)
    assert run_onnx(out, x=x).shape == (2, 7, 32)


def test_pruning_zero_sparsity_is_exact(cnn_onnx: Path, tmp_path: Path, run_onnx: RunOnnx) -> None:
    out = StructuredPruning(StructuredPruningConfig(sparsity=0.0)).run(cnn_onnx, tmp_path)
    x = np.random.default_rng(0).random((2, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(out, x=x), run_onnx(cnn_onnx, x=x), rtol=1e-5, atol=1e-5)


def test_pruning_conv_stack_through_flatten(
    cnn_onnx: Path, tmp_path: Path, run_onnx: RunOnnx
) -> None:
    pruning = StructuredPruning(StructuredPruningConfig(sparsity=0.5))
    out = pruning.run(cnn_onnx, tmp_path)
    assert pruning.summary is not None
    assert pruning.summary.groups == 2
    assert _params(out) < 0.6 * _params(cnn_onnx)
    x = np.random.default_rng(0).random((2, 1, 6, 6)).astype(np.float32)
    assert run_onnx(out, x=x).shape == (2, 4)


def test_pruning_without_groups_is_a_clear_error(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "single",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")],
    )
    path = tmp_path / "single.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(UnsupportedModelError, match="no prunable"):
        StructuredPruning(StructuredPruningConfig(sparsity=0.5)).run(path, tmp_path / "out")


def test_sensitive_layers_get_blockwise_int8(
    transformer_block_onnx: Path, tmp_path: Path, run_onnx: RunOnnx
) -> None:
    config = DynamicInt8Config(blockwise_nodes=("ffn_out",))
    out = DynamicInt8(config).run(transformer_block_onnx, tmp_path)
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert "MatMulNBits" in ops
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}  # ffn_in stays per-tensor int8
    int8_only = DynamicInt8(DynamicInt8Config()).run(transformer_block_onnx, tmp_path / "plain")
    assert out.stat().st_size < 1.2 * int8_only.stat().st_size
    x = np.random.default_rng(0).standard_normal((2, 5, 32)).astype(np.float32)
    assert np.abs(run_onnx(out, x=x) - run_onnx(transformer_block_onnx, x=x)).max() < 0.1


def test_embedding_tables_are_stored_per_row_in_int8(tmp_path: Path, run_onnx: RunOnnx) -> None:
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).standard_normal((100, 64)).astype(np.float32)
    table[7] *= 0.001  # a rare token with a tiny vector keeps its precision
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vectors"], name="embed")],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", "sequence", 64])],
        [numpy_helper.from_array(table, "table")],
    )
    path = tmp_path / "embedding.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    out = DynamicInt8(DynamicInt8Config()).run(path, tmp_path / "out")
    types = {t.name: t.data_type for t in onnx.load(str(out)).graph.initializer}
    assert TensorProto.INT8 in types.values()
    assert TensorProto.FLOAT in types.values()
    ids = np.array([[7, 3, 99]], dtype=np.int64)
    expected = table[ids]
    half_step = np.abs(expected).max(axis=-1, keepdims=True) / 254  # per-row rounding bound
    assert np.all(np.abs(run_onnx(out, ids=ids) - expected) <= half_step * 1.001)
