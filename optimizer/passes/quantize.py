"""Quantization passes built on ONNX Runtime's quantization tools, with the recipes that
measure well on CPU:

- dynamic int8 quantizes MatMul weights per output channel (per-tensor loses ~4 points of
  cosine on a trained transformer) and the embedding tables, and leaves convolutions alone
  (ONNX Runtime's ConvInteger is several times slower than fp32);
- static int8 writes QDQ with per-channel weights, which ONNX Runtime fuses into QLinearConv /
  QLinearMatMul, the fast path for CNNs;
- fp16 converts weights and compute but keeps fp32 inputs and outputs, so clients don't change;
- int4 is weight-only with ONNX Runtime's MatMulNBits (and GatherBlockQuantized for embeddings).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from optimizer.data import Dataset
from optimizer.model_info import load_onnx
from optimizer.passes.base import Pass, PassConfig, needs_external_data, save_model

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DynamicInt8",
    "DynamicInt8Config",
    "Float16",
    "Float16Config",
    "Int4WeightOnly",
    "Int4WeightOnlyConfig",
    "StaticInt8",
    "StaticInt8Config",
    "gemm_to_matmul",
    "quantizable_nodes",
]

_INT4_OPSET = 21
"""MatMulNBits models are written at this opset; older graphs are converted first."""


def _load_full(path: Path) -> onnx.ModelProto:
    import onnx

    return onnx.load(str(path))


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``Gemm(A, W, b)`` with a constant ``W`` as ``MatMul`` + ``Add``.

    ONNX Runtime's dynamic quantizer only handles MatMul, and exporters write ``nn.Linear`` on
    2-D inputs as Gemm; without this an MLP would come out unquantized.
    """
    from onnx import helper, numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    rewritten: list[onnx.NodeProto] = []
    for node in model.graph.node:
        attributes = {
            attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute
        }
        convertible = (
            node.op_type == "Gemm"
            and node.input[1] in initializers
            and attributes.get("transA", 0) == 0
            and attributes.get("alpha", 1.0) == 1.0
            and attributes.get("beta", 1.0) == 1.0
        )
        if not convertible:
            rewritten.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attributes.get("transB", 0):
            weight = weight.T.copy()
        weight_name = f"{node.input[1]}_matmul"
        model.graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        rewritten.append(
            helper.make_node(
                "MatMul", [node.input[0], weight_name], [product], name=f"{node.name}_MatMul"
            )
        )
        if has_bias:
            rewritten.append(
                helper.make_node(
                    "Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_Add"
                )
            )
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    _drop_unused_initializers(model)
    return model


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used.update(output.name for output in model.graph.output)
    kept = [tensor for tensor in model.graph.initializer if tensor.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def quantizable_nodes(path: Path, op_types: tuple[str, ...] = ("MatMul", "Gemm")) -> list[str]:
    """Names of the nodes with a constant weight that quantization would touch, in graph order."""
    model = load_onnx(path)
    constants = {tensor.name for tensor in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in op_types and len(node.input) > 1 and node.input[1] in constants
    ]


def quantize_embedding_rows(model: onnx.ModelProto, min_elements: int = 4096) -> onnx.ModelProto:
    """Store large ``Gather`` tables as int8 with one scale per row (per token).

    ``Gather(table, ids)`` becomes ``Gather(int8 table, ids) * Gather(row scales, ids)``: only
    the looked-up rows are dequantized, and a per-row scale keeps rare tokens' small vectors as
    precise as frequent tokens' large ones (ONNX Runtime's per-tensor Gather quantization does
    not), which is worth ~0.05 points of cosine on a trained encoder.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    tables = {tensor.name: tensor for tensor in model.graph.initializer}
    rewritten: list[onnx.NodeProto] = []
    for node in model.graph.node:
        table = tables.get(node.input[0]) if node.op_type == "Gather" else None
        if (
            table is None
            or table.data_type != onnx.TensorProto.FLOAT
            or len(table.dims) != 2
            or math.prod(table.dims) < min_elements
            or any(a.name == "axis" and helper.get_attribute_value(a) != 0 for a in node.attribute)
        ):
            rewritten.append(node)
            continue
        values = numpy_helper.to_array(table)
        scales = np.maximum(np.abs(values).max(axis=1, keepdims=True), 1e-12) / 127.0
        quantized = np.clip(np.rint(values / scales), -127, 127).astype(np.int8)
        prefix = f"{node.output[0]}_q"
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(quantized, f"{table.name}_int8"),
                numpy_helper.from_array(scales.astype(np.float32), f"{table.name}_row_scale"),
            ]
        )
        rewritten.extend(
            [
                helper.make_node(
                    "Gather", [f"{table.name}_int8", node.input[1]], [f"{prefix}_rows"], axis=0
                ),
                helper.make_node(
                    "Gather",
                    [f"{table.name}_row_scale", node.input[1]],
                    [f"{prefix}_scales"],
                    axis=0,
                ),
                helper.make_node(
                    "Cast", [f"{prefix}_rows"], [f"{prefix}_float"], to=onnx.TensorProto.FLOAT
                ),
                helper.make_node(
                    "Mul", [f"{prefix}_float", f"{prefix}_scales"], [node.output[0]], name=node.name
                ),
            ]
        )
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    _drop_unused_initializers(model)
    return model


# --- dynamic int8 -----------------------------------------------------------------------------


class DynamicInt8Config(PassConfig):
    per_channel: bool = True
    """Per output channel weight scales; keep on for transformers."""
    quantize_embeddings: bool = True
    """Also store Gather tables (token embeddings) in int8: often half a transformer's size."""
    exclude_nodes: tuple[str, ...] = ()
    """Nodes left in fp32, e.g. the most sensitive layers a sensitivity scan found."""
    blockwise_nodes: tuple[str, ...] = ()
    """Sensitive MatMuls quantized with ONNX Runtime's MatMulNBits at 8 bits instead: weight
    scales per block of 32 and activations quantized per block at run time. Per-tensor
    activation scales are what hurts layers with outlier channels (a transformer's FFN output
    projection); per-block ones keep them nearly exact at int8 size and close to int8 speed."""


class DynamicInt8(Pass[DynamicInt8Config]):
    name = "int8_dynamic"

    def run(self, artifact: Path, out_dir: Path) -> Path:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        output = self.output_path(out_dir)
        prepared = out_dir / f"{self.name}_prepared.onnx"
        model = gemm_to_matmul(_load_full(artifact))
        if self.config.quantize_embeddings:
            model = quantize_embedding_rows(model)
        save_model(model, prepared)
        quantize_dynamic(
            prepared,
            output,
            per_channel=self.config.per_channel,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            use_external_data_format=needs_external_data(prepared),
            nodes_to_exclude=[
                *(excluded := (*self.config.exclude_nodes, *self.config.blockwise_nodes)),
                *(f"{name}_MatMul" for name in excluded),
            ],
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        prepared.unlink()
        if self.config.blockwise_nodes:
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            names = [*self.config.blockwise_nodes]
            names += [f"{name}_MatMul" for name in self.config.blockwise_nodes]
            quantizer = MatMulNBitsQuantizer(
                _load_full(output),
                bits=8,
                block_size=32,
                is_symmetric=True,
                accuracy_level=4,
                nodes_to_include=names,
                op_types_to_quantize=("MatMul",),
            )
            quantizer.process()
            save_model(quantizer.model.model, output)
        return output


# --- static int8 (QDQ) ------------------------------------------------------------------------


class StaticInt8Config(PassConfig):
    per_channel: bool = True
    calibration_method: Literal["minmax", "percentile", "entropy"] = "minmax"
    calibration_samples: Annotated[int, Field(ge=1, le=100_000)] = 256
    exclude_nodes: tuple[str, ...] = ()


class _CalibrationReader:
    """Feeds calibration samples one at a time, as ONNX Runtime's calibrators expect."""

    def __init__(self, data: Dataset, samples: int) -> None:
        self._batches: Iterator[dict[str, Any]] = (
            data.batch(1, index) for index in range(min(samples, data.samples))
        )

    def get_next(self) -> dict[str, Any] | None:
        return next(self._batches, None)


class StaticInt8(Pass[StaticInt8Config]):
    """QDQ int8 with activation ranges from calibration data."""

    name = "int8_static"

    def __init__(self, config: StaticInt8Config, calibration: Dataset) -> None:
        super().__init__(config)
        self.calibration = calibration

    def run(self, artifact: Path, out_dir: Path) -> Path:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        methods = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }
        output = self.output_path(out_dir)
        prepared = out_dir / f"{self.name}_prepared.onnx"
        quant_pre_process(str(artifact), str(prepared), skip_symbolic_shape=True)
        reader = _CalibrationReader(self.calibration, self.config.calibration_samples)
        CalibrationDataReader.register(_CalibrationReader)
        quantize_static(
            prepared,
            output,
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=self.config.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(self.config.exclude_nodes),
            calibrate_method=methods[self.config.calibration_method],
            use_external_data_format=needs_external_data(prepared),
            extra_options={"CalibTensorRangeSymmetric": False},
        )
        prepared.unlink()
        return output


# --- fp16 -------------------------------------------------------------------------------------


class Float16Config(PassConfig):
    keep_io_types: bool = True
    """Inputs and outputs stay fp32 so clients send and receive what they did before."""


class Float16(Pass[Float16Config]):
    name = "fp16"

    def run(self, artifact: Path, out_dir: Path) -> Path:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        converted = convert_float_to_float16(
            _load_full(artifact), keep_io_types=self.config.keep_io_types
        )
        return save_model(_topologically_sorted(converted), self.output_path(out_dir))


def _topologically_sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """Order nodes so each comes after its inputs' producers (Kahn's algorithm, stable).

    The fp16 converter appends the input casts it inserts at the end of the node list, which
    ONNX Runtime tolerates but ``onnx.checker`` (rightly) rejects.
    """
    from collections import deque

    nodes = list(model.graph.node)
    producer = {name: index for index, node in enumerate(nodes) for name in node.output}
    waiting_on = [0] * len(nodes)
    dependents: list[list[int]] = [[] for _ in nodes]
    for index, node in enumerate(nodes):
        for source in {producer[name] for name in node.input if name in producer}:
            if source != index:
                waiting_on[index] += 1
                dependents[source].append(index)
    ready = deque(index for index, count in enumerate(waiting_on) if count == 0)
    order: list[int] = []
    while ready:
        index = ready.popleft()
        order.append(index)
        for dependent in dependents[index]:
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                ready.append(dependent)
    if len(order) != len(nodes):  # a cycle: leave the graph as it was for the checker to report
        return model
    del model.graph.node[:]
    model.graph.node.extend(nodes[index] for index in order)
    return model


# --- int4 weight-only -------------------------------------------------------------------------


class Int4WeightOnlyConfig(PassConfig):
    block_size: Literal[32, 64, 128, 256] = 128
    """Weights per scale; 128 gives ~-86% size on a transformer, 32 is more accurate."""
    symmetric: bool = True
    """No zero points: smaller, and accurate enough for weight distributions centred on 0."""
    accuracy_level: Literal[0, 1, 2, 3, 4] = 4
    """MatMulNBits compute type; 4 = int8 activations, the fastest on CPU."""
    quantize_embeddings: bool = True


class Int4WeightOnly(Pass[Int4WeightOnlyConfig]):
    name = "int4"

    def run(self, artifact: Path, out_dir: Path) -> Path:
        import onnx.version_converter
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        model = gemm_to_matmul(_load_full(artifact))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < _INT4_OPSET:
            model = onnx.version_converter.convert_version(model, _INT4_OPSET)
        op_types: tuple[str, ...] = (
            ("MatMul", "Gather") if self.config.quantize_embeddings else ("MatMul",)
        )
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=4,
            block_size=self.config.block_size,
            is_symmetric=self.config.symmetric,
            accuracy_level=self.config.accuracy_level,
            op_types_to_quantize=op_types,
            quant_axes=(("MatMul", 0), ("Gather", 1)),
        )
        quantizer.process()
        return save_model(quantizer.model.model, self.output_path(out_dir))
