"""Calibration and evaluation data: a user's ``.npz`` checked against the model, or inputs
generated from the model's signature when there is none."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from optimizer.errors import CalibrationDataError
from optimizer.model_info import TensorSpec

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import onnx

__all__ = [
    "DEFAULT_DYNAMIC_SIZE",
    "Dataset",
    "check_index_bounds",
    "generate_dataset",
    "index_limits",
    "load_dataset",
]

LABELS = "labels"
DEFAULT_DYNAMIC_SIZE = 128
"""Generated inputs use this for dynamic axes other than the batch (e.g. sequence length)."""
_GENERATED_SAMPLES = 32
_GENERATED_MAX_ID = 1000
"""Generated token ids stay below this, and below the smallest embedding table they index."""
_INDEX_PASS_THROUGH = frozenset(
    {"Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand"}
)
"""Ops between an integer input and the Gather it indexes that keep the ids' values."""
_NUMPY_DTYPES = {
    "FP32": "float32",
    "FP16": "float16",
    "FP64": "float64",
    "INT64": "int64",
    "INT32": "int32",
    "INT16": "int16",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}


@dataclass(frozen=True)
class Dataset:
    """Inputs by name (first axis = samples), optional labels, and whether they were invented."""

    inputs: dict[str, npt.NDArray[np.generic]]
    labels: npt.NDArray[np.generic] | None = None
    generated: bool = False
    notes: list[str] = field(default_factory=list)
    source: str = "generated inputs"
    """The file the data came from, for error messages."""

    @property
    def samples(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batch(self, size: int, start: int = 0) -> dict[str, npt.NDArray[np.generic]]:
        """``size`` consecutive samples, wrapping around when the data has fewer."""
        import numpy as np

        indices = (np.arange(size) + start) % self.samples
        return {name: array[indices] for name, array in self.inputs.items()}


def load_dataset(path: Path, signature: list[TensorSpec]) -> Dataset:
    """Read ``path`` and check every model input is there with a fitting dtype and shape.

    TorchScript records no shapes or dtypes (``shape`` is None): its arrays keep their dtype,
    except that inputs the module uses as indices (``INT64``) must hold integers.
    """
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise CalibrationDataError(f"data: no file at {path}") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CalibrationDataError(
            f"data: {path.name} is not a readable .npz of arrays by input name ({exc})"
        ) from None
    labels = arrays.pop(LABELS, None)
    expected = {spec.name for spec in signature}
    missing, unknown = sorted(expected - arrays.keys()), sorted(arrays.keys() - expected)
    if missing or unknown:
        raise CalibrationDataError(
            f"data: {path.name} must hold arrays named like the model inputs {sorted(expected)}"
            f" (plus optional '{LABELS}'); missing {missing}, unexpected {unknown}"
        )
    counts = set()
    for spec in signature:
        array = arrays[spec.name]
        _check_array(spec, array, path.name)
        wanted = _NUMPY_DTYPES.get(spec.datatype)
        counts.add(len(array))
        if spec.shape is None:
            if spec.datatype == "INT64" and not np.issubdtype(array.dtype, np.integer):
                raise CalibrationDataError(
                    f"data: {path.name}[{spec.name!r}] has dtype {array.dtype}, but the model "
                    "uses it as indices (an embedding or gather), which need integers"
                )
            continue
        if wanted is not None and array.dtype != np.dtype(wanted):
            if np.can_cast(array.dtype, wanted, casting="same_kind"):
                arrays[spec.name] = array.astype(wanted)
            else:
                raise CalibrationDataError(
                    f"data: {path.name}[{spec.name!r}] has dtype {array.dtype}, the model "
                    f"expects {wanted}"
                )
    if labels is not None:
        counts.add(len(labels))
    if len(counts) != 1:
        raise CalibrationDataError(
            f"data: {path.name} arrays (and labels) must have the same number of samples, "
            f"got {sorted(counts)}"
        )
    if counts == {0}:
        raise CalibrationDataError(f"data: {path.name} holds no samples")
    return Dataset(inputs=arrays, labels=labels, source=path.name)


def _check_array(spec: TensorSpec, array: npt.NDArray[np.generic], filename: str) -> None:
    if spec.shape is None:
        return
    if array.ndim != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape[1:], array.shape[1:], strict=True)
    ):
        wanted = ["N", *("?" if dim < 0 else str(dim) for dim in spec.shape[1:])]
        raise CalibrationDataError(
            f"data: {filename}[{spec.name!r}] has shape {list(array.shape)}, the model expects "
            f"[{', '.join(wanted)}] (first axis = samples)"
        )


def index_limits(model: onnx.ModelProto) -> dict[str, int]:
    """For each graph input used as Gather indices, the rows of the smallest table it indexes.

    Ids at or above that (or below its negative) make the model fail, so generated ids stay
    under it and user data is checked against it.
    """
    from onnx import helper

    tables = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    limits: dict[str, int] = {}
    for value in model.graph.input:
        frontier, seen = [value.name], {value.name}
        while frontier:
            tensor = frontier.pop()
            for node in consumers.get(tensor, []):
                dims = tables.get(node.input[0], [])
                if node.op_type == "Gather" and node.input[1:2] == [tensor] and dims:
                    axis = next(
                        (
                            int(helper.get_attribute_value(a))
                            for a in node.attribute
                            if a.name == "axis"
                        ),
                        0,
                    )
                    rows = dims[axis % len(dims)]
                    limits[value.name] = min(limits.get(value.name, rows), rows)
                elif node.op_type in _INDEX_PASS_THROUGH and node.input[0] == tensor:
                    fresh = [name for name in node.output if name not in seen]
                    seen.update(fresh)
                    frontier.extend(fresh)
    return limits


def check_index_bounds(data: Dataset, limits: dict[str, int]) -> None:
    """Ids outside the embedding tables they index fail the model: say which and why."""
    for name, limit in limits.items():
        array = data.inputs.get(name)
        if array is None or array.size == 0:
            continue
        low, high = int(array.min()), int(array.max())
        if high >= limit or low < -limit:
            raise CalibrationDataError(
                f"data: {data.source}[{name!r}] holds ids from {low} to {high}, but the model "
                f"looks them up in a table of {limit} rows, so they must lie in 0..{limit - 1}"
            )


def generate_dataset(
    signature: list[TensorSpec],
    samples: int = _GENERATED_SAMPLES,
    limits: dict[str, int] | None = None,
) -> Dataset:
    """Plausible inputs from the signature: N(0,1) floats, small ints, all-ones masks.

    Token ids stay below ``limits`` (see :func:`index_limits`). Good enough for calibration
    ranges of normalised inputs and for fidelity checks; the report says the data was
    generated, since real data calibrates better.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    inputs: dict[str, npt.NDArray[np.generic]] = {}
    for spec in signature:
        if spec.shape is None:
            raise CalibrationDataError(
                f"data: input {spec.name!r} has no recorded shape (TorchScript); pass --data "
                "FILE.npz with example inputs, or save the model with torch.export (.pt2)"
            )
        shape = [samples] + [DEFAULT_DYNAMIC_SIZE if dim < 0 else dim for dim in spec.shape[1:]]
        dtype = _NUMPY_DTYPES.get(spec.datatype, "float32")
        if dtype == "bool":
            inputs[spec.name] = np.ones(shape, dtype=bool)
        elif np.issubdtype(np.dtype(dtype), np.integer):
            if "mask" in spec.name.lower():
                inputs[spec.name] = np.ones(shape, dtype=dtype)
            elif "type" in spec.name.lower() or "position" in spec.name.lower():
                inputs[spec.name] = np.zeros(shape, dtype=dtype)
            else:
                high = min(_GENERATED_MAX_ID, (limits or {}).get(spec.name, _GENERATED_MAX_ID))
                inputs[spec.name] = rng.integers(0, high, size=shape).astype(dtype)
        else:
            inputs[spec.name] = rng.standard_normal(shape).astype(dtype)
    return Dataset(
        inputs=inputs,
        generated=True,
        notes=["no data given: calibration and fidelity used inputs generated from the signature"],
    )
