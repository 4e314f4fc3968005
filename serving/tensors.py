"""Open Inference Protocol tensors: datatypes, JSON data and the binary tensor data extension.

Everything here turns a client's bytes into numpy arrays, or arrays into bytes, and reports a
malformed tensor as :class:`RequestError` naming the tensor and what was expected.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DATATYPES",
    "ORT_TO_DATATYPE",
    "RequestError",
    "TensorSpec",
    "decode_binary",
    "decode_json_data",
    "encode_binary",
    "json_data",
]

# OIP datatype -> numpy dtype (little-endian, as the binary extension requires).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

# onnxruntime's type strings -> OIP datatype.
ORT_TO_DATATYPE = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_LENGTH = struct.Struct("<I")


class RequestError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, ``str()`` the message,
    ``headers`` any the answer needs (``Allow`` on 405, ``Retry-After`` on 503)."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output as the protocol describes it; ``-1`` marks a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def check_shape(self, shape: Sequence[int]) -> None:
        """Refuse a request shape of the wrong rank or with a wrong fixed dimension."""
        if len(shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        ):
            raise RequestError(
                400,
                f"input {self.name!r}: shape {list(shape)} does not fit the model's "
                f"{list(self.shape)} (-1 = any size)",
            )


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def decode_json_data(spec: TensorSpec, shape: Sequence[int], data: object) -> np.ndarray[Any, Any]:
    """The ``data`` of a JSON input (flat or nested, row-major) as an array of ``shape``.

    Values must be of the tensor's kind: integers for integer types (within range), numbers for
    floats, booleans for BOOL, strings for BYTES; anything else is refused rather than cast.
    """
    where = f"input {spec.name!r}"
    if not isinstance(data, list):
        raise RequestError(400, f"{where}: 'data' must be a JSON array of {spec.datatype} values")
    try:
        values = np.array(data, dtype=object if spec.datatype == "BYTES" else None)
    except ValueError:
        raise RequestError(400, f"{where}: 'data' is a ragged nested array") from None
    want = element_count(shape)
    if values.size != want:
        raise RequestError(
            400, f"{where}: shape {list(shape)} needs {want} values, 'data' has {values.size}"
        )
    return _as_datatype(values, spec, where).reshape(shape)


def _as_datatype(
    values: np.ndarray[Any, Any], spec: TensorSpec, where: str
) -> np.ndarray[Any, Any]:
    dtype = DATATYPES[spec.datatype]
    kind = values.dtype.kind
    if values.size == 0:
        return values.astype(dtype)
    if spec.datatype == "BYTES":
        flat = values.ravel()
        if not all(isinstance(item, str) for item in flat):
            raise RequestError(400, f"{where}: BYTES 'data' must be strings")
        return flat
    if spec.datatype == "BOOL":
        if kind != "b":
            raise RequestError(400, f"{where}: BOOL 'data' must be true/false, not {_kind(kind)}")
        return values
    if dtype.kind == "f":
        if kind not in "iuf":
            raise RequestError(
                400, f"{where}: {spec.datatype} 'data' must be numbers, not {_kind(kind)}"
            )
        return values.astype(dtype)
    if kind not in "iu":
        raise RequestError(
            400, f"{where}: {spec.datatype} 'data' must be integers, not {_kind(kind)}"
        )
    limits = np.iinfo(dtype)
    if values.min() < limits.min or values.max() > limits.max:
        raise RequestError(
            400, f"{where}: {spec.datatype} values must lie in {limits.min}..{limits.max}"
        )
    return values.astype(dtype)


def _kind(kind: str) -> str:
    return {
        "b": "booleans",
        "i": "integers",
        "u": "integers",
        "f": "non-integer numbers",
        "U": "strings",
        "O": "mixed values",
    }.get(kind, "other values")


def decode_binary(
    spec: TensorSpec, shape: Sequence[int], chunk: memoryview
) -> np.ndarray[Any, Any]:
    """A tensor sent with the binary extension: raw little-endian values, or for BYTES each
    element as a 4-byte little-endian length followed by its bytes."""
    where = f"input {spec.name!r}"
    count = element_count(shape)
    if spec.datatype == "BYTES":
        items = _split_bytes(chunk, where)
        if len(items) != count:
            raise RequestError(
                400, f"{where}: shape {list(shape)} needs {count} BYTES elements, got {len(items)}"
            )
        return np.array(items, dtype=object).reshape(shape)
    dtype = DATATYPES[spec.datatype]
    want = count * dtype.itemsize
    if len(chunk) != want:
        raise RequestError(
            400,
            f"{where}: binary_data_size is {len(chunk)} bytes but shape {list(shape)} of "
            f"{spec.datatype} needs {want}",
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _split_bytes(chunk: memoryview, where: str) -> list[str]:
    """Length-prefixed BYTES elements; onnxruntime string tensors hold text, so UTF-8 only."""
    items: list[str] = []
    offset, end = 0, len(chunk)
    while offset < end:
        if offset + 4 > end:
            raise RequestError(400, f"{where}: BYTES element length prefix cut short")
        (length,) = _LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + length > end:
            raise RequestError(400, f"{where}: BYTES element of {length} bytes runs past the data")
        try:
            items.append(bytes(chunk[offset : offset + length]).decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(400, f"{where}: BYTES elements must be UTF-8 text") from None
        offset += length
    return items


def json_data(datatype: str, array: np.ndarray[Any, Any]) -> list[Any]:
    """An output's values as a flat JSON list (row-major)."""
    flat = array.ravel()
    if datatype == "BYTES":
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in flat
        ]
    values: list[Any] = flat.tolist()
    return values


def encode_binary(datatype: str, array: np.ndarray[Any, Any]) -> bytes:
    """An output's values in the binary extension's layout."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in array.ravel():
            raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts += (_LENGTH.pack(len(raw)), raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
