"""Structured magnitude pruning: remove whole neurons / channels so the model really shrinks.

Zeroing individual weights leaves a dense ONNX file exactly as large and as slow. This pass
finds *groups*: a layer with constant weights (MatMul, Gemm, Conv) whose output reaches only
other weight layers' inputs through channel-wise operations (bias Add, ReLU, GELU's Erf chain,
pooling, Flatten into a Linear). In such a group, dropping output channel *c* of the producer
and the matching input rows of every consumer leaves the rest of the graph untouched: that is a
Linear-Linear stack, a Conv-Conv stack, a CNN's last conv into its classifier, and a
transformer's MLP block. Channels with the smallest weight norms go first.

Without fine-tuning, accuracy drops with sparsity; the report measures by how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from optimizer.errors import UnsupportedModelError
from optimizer.passes.base import Pass, PassConfig, save_model

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import onnx

__all__ = ["PruneSummary", "StructuredPruning", "StructuredPruningConfig", "find_groups"]

_CHANNEL_WISE_UNARY = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Sigmoid",
        "Tanh",
        "Erf",
        "Gelu",
        "FastGelu",
        "Elu",
        "Selu",
        "Softplus",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "Dropout",
        "Neg",
        "Abs",
        "Sqrt",
        "Exp",
    }
)
_CHANNEL_WISE_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow"})
_SPATIAL_POOLING = frozenset({"MaxPool", "AveragePool"})


class StructuredPruningConfig(PassConfig):
    sparsity: Annotated[float, Field(ge=0.0, le=0.95)]
    """Fraction of the neurons / channels of every prunable group that is removed."""


@dataclass
class _Group:
    """A producer's output channels and everything that must be sliced with them."""

    producer: onnx.NodeProto
    channels: int
    channel_axis: int
    """Axis of the channels in the producer's output, negative (from the end)."""
    consumers: list[tuple[onnx.NodeProto, int]] = field(default_factory=list)
    """Weight layers fed by the group and the number of input rows per channel (Flatten > 1)."""
    channel_constants: list[tuple[onnx.NodeProto, int]] = field(default_factory=list)
    """Per-channel constants (biases) on the path, by node and input index."""


@dataclass(frozen=True)
class PruneSummary:
    groups: int
    channels_before: int
    channels_after: int
    parameters_before: int
    parameters_after: int


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx import numpy_helper

        self.model = model
        self.weights: dict[str, npt.NDArray[np.generic]] = {
            tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer
        }
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {output.name for output in model.graph.output}

    def weight(self, node: onnx.NodeProto, index: int) -> npt.NDArray[np.generic] | None:
        if len(node.input) <= index or not node.input[index]:
            return None
        return self.weights.get(node.input[index])


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return int(helper.get_attribute_value(attribute))
    return default


def _producer_channels(graph: _Graph, node: onnx.NodeProto) -> tuple[int, int] | None:
    """Output channel count and (negative) channel axis of a prunable producer, else None."""
    weight = graph.weight(node, 1)
    if weight is None:
        return None
    if node.op_type == "MatMul" and weight.ndim == 2:
        return weight.shape[1], -1
    if node.op_type == "Gemm" and weight.ndim == 2 and _attribute(node, "transA", 0) == 0:
        return (weight.shape[0] if _attribute(node, "transB", 0) else weight.shape[1]), -1
    if node.op_type == "Conv" and weight.ndim >= 3 and _attribute(node, "group", 1) == 1:
        return weight.shape[0], -(weight.ndim - 1)
    return None


def _consumer_rows(
    graph: _Graph, node: onnx.NodeProto, channels: int, axis: int, flattened: bool
) -> int | None:
    """Input rows per channel when ``node`` is a weight layer reading the group, else None."""
    weight = graph.weight(node, 1)
    if weight is None:
        return None
    if node.op_type in ("MatMul", "Gemm") and weight.ndim == 2 and (axis == -1 or flattened):
        if node.op_type == "Gemm" and _attribute(node, "transA", 0):
            return None
        rows = (
            weight.shape[1]
            if node.op_type == "Gemm" and _attribute(node, "transB", 0)
            else weight.shape[0]
        )
        return rows // channels if rows % channels == 0 else None
    if node.op_type == "Conv" and _attribute(node, "group", 1) == 1 and axis == -(weight.ndim - 1):
        return 1 if weight.shape[1] == channels else None
    return None


def _per_channel_constant(value: npt.NDArray[np.generic], channels: int, axis: int) -> bool | None:
    """True for a per-channel constant, False for a scalar, None for anything else."""
    if value.size == 1:
        return False
    if value.ndim < -axis:
        return None
    shape = list(value.shape)
    if shape[axis] != channels or any(
        dim != 1 for index, dim in enumerate(shape) if index != len(shape) + axis
    ):
        return None
    return True


def _trace_group(graph: _Graph, producer: onnx.NodeProto) -> _Group | None:
    """Follow the producer's output through channel-wise ops; None if it escapes anywhere.

    First collect every node reachable from the producer up to the consuming weight layers;
    then check each collected node's other inputs are in that region or constants (a GELU
    multiplies two tensors of the region; a residual Add brings in an outside tensor).
    """
    found = _producer_channels(graph, producer)
    if found is None:
        return None
    channels, axis = found
    group = _Group(producer=producer, channels=channels, channel_axis=axis)
    region = {producer.output[0]}
    region_nodes: list[onnx.NodeProto] = []
    frontier = [(producer.output[0], False)]
    seen: set[int] = set()
    while frontier:
        tensor, flattened = frontier.pop()
        if tensor in graph.outputs:
            return None
        for node in graph.consumers.get(tensor, []):
            if id(node) in seen:
                continue
            seen.add(id(node))
            rows = None
            if node.input[0] == tensor:
                rows = _consumer_rows(graph, node, channels, axis, flattened)
            if rows is not None:
                group.consumers.append((node, rows))
                continue
            channel_wise = (
                node.op_type in _CHANNEL_WISE_UNARY or node.op_type in _CHANNEL_WISE_BINARY
            )
            pooling = node.op_type in _SPATIAL_POOLING and axis != -1
            flatten = node.op_type == "Flatten" and axis != -1 and _attribute(node, "axis", 1) == 1
            if flattened or not (channel_wise or pooling or flatten):
                return None
            region_nodes.append(node)
            region.add(node.output[0])
            frontier.append((node.output[0], flatten))
    for node in region_nodes:
        for index, name in enumerate(node.input):
            if not name or name in region:
                continue
            constant = graph.weights.get(name)
            kind = None if constant is None else _per_channel_constant(constant, channels, axis)
            if kind is None or (kind and node.op_type not in _CHANNEL_WISE_BINARY):
                return None
            if kind:
                group.channel_constants.append((node, index))
    return group if group.consumers else None


def find_groups(model: onnx.ModelProto) -> list[_Group]:
    """Every prunable group of the model, in graph order."""
    graph = _Graph(model)
    groups = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm", "Conv"):
            group = _trace_group(graph, node)
            if group is not None and group.channels > 1:
                groups.append(group)
    return groups


class StructuredPruning(Pass[StructuredPruningConfig]):
    name = "pruned"

    def __init__(self, config: StructuredPruningConfig) -> None:
        super().__init__(config)
        self.summary: PruneSummary | None = None

    def run(self, artifact: Path, out_dir: Path) -> Path:
        import onnx

        model = onnx.load(str(artifact))
        groups = find_groups(model)
        if not groups:
            raise UnsupportedModelError(
                "pruning: no prunable Linear/Conv stack or MLP block found (every layer's output "
                "reaches a reshape, residual or graph output); try quantization instead"
            )
        graph = _Graph(model)
        parameters_before = sum(array.size for array in graph.weights.values())
        channels_before = sum(group.channels for group in groups)
        channels_after = 0
        for group in groups:
            keep = self._channels_to_keep(graph, group)
            channels_after += len(keep)
            _slice_group(graph, group, keep)
        _write_weights(graph)
        del model.graph.value_info[:]
        self.summary = PruneSummary(
            groups=len(groups),
            channels_before=channels_before,
            channels_after=channels_after,
            parameters_before=int(parameters_before),
            parameters_after=sum(math.prod(tensor.dims) for tensor in model.graph.initializer),
        )
        return save_model(model, self.output_path(out_dir))

    def _channels_to_keep(self, graph: _Graph, group: _Group) -> npt.NDArray[np.int64]:
        """Indices of the channels with the largest producer-out x consumer-in weight norms."""
        import numpy as np

        importance = _channel_norms(graph, group.producer, group.channels, producer=True)
        for consumer, rows in group.consumers:
            importance = importance * _channel_norms(
                graph, consumer, group.channels, producer=False, rows=rows
            )
        kept = max(1, group.channels - round(self.config.sparsity * group.channels))
        return np.sort(np.argsort(-importance, kind="stable")[:kept])


def _weight_view(graph: _Graph, node: onnx.NodeProto, producer: bool) -> npt.NDArray[np.floating]:
    """The node's weight with the channel axis first (outputs for producers, inputs for consumers)."""
    import numpy as np

    weight = np.asarray(graph.weight(node, 1), dtype=np.float64)
    if node.op_type == "Conv":
        return weight if producer else np.swapaxes(weight, 0, 1)
    transposed = node.op_type == "Gemm" and _attribute(node, "transB", 0) == 1
    # MatMul weights are [in, out]; Gemm with transB stores [out, in].
    return weight if transposed == producer else weight.T


def _channel_norms(
    graph: _Graph, node: onnx.NodeProto, channels: int, *, producer: bool, rows: int = 1
) -> npt.NDArray[np.floating]:
    import numpy as np

    view = _weight_view(graph, node, producer)
    blocks = view.reshape(channels, rows, -1) if not producer else view.reshape(channels, -1)
    norms = np.sqrt(np.sum(blocks.reshape(channels, -1) ** 2, axis=1)) + 1e-12
    return np.asarray(norms, dtype=np.float64)


def _slice_group(graph: _Graph, group: _Group, keep: npt.NDArray[np.int64]) -> None:
    import numpy as np

    producer = group.producer
    weight = graph.weights[producer.input[1]]
    if producer.op_type == "Conv" or (
        producer.op_type == "Gemm" and _attribute(producer, "transB", 0)
    ):
        _replace(graph, producer, 1, weight[keep])
    else:
        _replace(graph, producer, 1, weight[:, keep])
    bias = graph.weight(producer, 2)
    if bias is not None and producer.op_type in ("Conv", "Gemm") and bias.size == group.channels:
        _replace(graph, producer, 2, bias.reshape(-1)[keep].reshape(-1))
    for node, index in group.channel_constants:
        constant = graph.weights[node.input[index]]
        _replace(
            graph, node, index, np.take(constant, keep, axis=constant.ndim + group.channel_axis)
        )
    for consumer, rows in group.consumers:
        weight = graph.weights[consumer.input[1]]
        kept_rows = (keep[:, None] * rows + np.arange(rows)[None, :]).reshape(-1)
        if consumer.op_type == "Conv":
            _replace(graph, consumer, 1, weight[:, keep])
        elif consumer.op_type == "Gemm" and _attribute(consumer, "transB", 0):
            _replace(graph, consumer, 1, weight[:, kept_rows])
        else:
            _replace(graph, consumer, 1, weight[kept_rows])


def _replace(
    graph: _Graph, node: onnx.NodeProto, index: int, value: npt.NDArray[np.generic]
) -> None:
    """Give this node its own sliced copy (a shared initializer keeps its other users intact)."""
    name = f"{node.input[index]}_pruned_{node.name or id(node)}"
    graph.weights[name] = value
    node.input[index] = name


def _write_weights(graph: _Graph) -> None:
    from onnx import numpy_helper

    used = {name for node in graph.model.graph.node for name in node.input}
    del graph.model.graph.initializer[:]
    graph.model.graph.initializer.extend(
        numpy_helper.from_array(value, name)
        for name, value in graph.weights.items()
        if name in used
    )
