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

__all__ = ["DEFAULT_DYNAMIC_SIZE", "Dataset", "generate_dataset", "load_dataset"]

LABELS = "labels"
DEFAULT_DYNAMIC_SIZE = 128
"""Generated inputs use this for dynamic axes other than the batch (e.g. sequence length)."""
_GENERATED_SAMPLES = 32
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

    @property
    def samples(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batch(self, size: int, start: int = 0) -> dict[str, npt.NDArray[np.generic]]:
        """``size`` consecutive samples, wrapping around when the data has fewer."""
        import numpy as np

        indices = (np.arange(size) + start) % self.samples
        return {name: array[indices] for name, array in self.inputs.items()}


def load_dataset(path: Path, signature: list[TensorSpec]) -> Dataset:
    """Read ``path`` and check every model input is there with a fitting dtype and shape."""
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
        if wanted is not None and array.dtype != np.dtype(wanted):
            if np.can_cast(array.dtype, wanted, casting="same_kind"):
                arrays[spec.name] = array.astype(wanted)
            else:
                raise CalibrationDataError(
                    f"data: {path.name}[{spec.name!r}] has dtype {array.dtype}, the model "
                    f"expects {wanted}"
                )
        counts.add(len(array))
    if labels is not None:
        counts.add(len(labels))
    if len(counts) != 1:
        raise CalibrationDataError(
            f"data: {path.name} arrays (and labels) must have the same number of samples, "
            f"got {sorted(counts)}"
        )
    if counts == {0}:
        raise CalibrationDataError(f"data: {path.name} holds no samples")
    return Dataset(inputs=arrays, labels=labels)


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


def generate_dataset(signature: list[TensorSpec], samples: int = _GENERATED_SAMPLES) -> Dataset:
    """Plausible inputs from the signature: N(0,1) floats, small ints, all-ones masks.

    Good enough for calibration ranges of normalised inputs and for fidelity checks; the report
    says the data was generated, since real data calibrates better.
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
                inputs[spec.name] = rng.integers(0, 1000, size=shape).astype(dtype)
        else:
            inputs[spec.name] = rng.standard_normal(shape).astype(dtype)
    return Dataset(
        inputs=inputs,
        generated=True,
        notes=["no data given: calibration and fidelity used inputs generated from the signature"],
    )
