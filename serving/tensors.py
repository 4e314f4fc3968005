"""Open Inference Protocol tensors: datatypes, JSON data and the binary tensor data extension.

Everything here turns a client's bytes into numpy arrays, or arrays into bytes, and reports a
malformed tensor as :class:`RequestError` naming the tensor and what was expected.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
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

    def check_shape(self, shape: Sequence[int], max_values: int) -> None:
        """Refuse a request shape of the wrong rank, with a wrong fixed dimension, or larger than
        a request body of ``max_values`` bytes could fill. Zero dimensions count as 1 there:
        an empty ``[0, 10**20]`` holds nothing, but numpy cannot even describe it."""
        if len(shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        ):
            raise RequestError(
                400,
                f"input {self.name!r}: shape {list(shape)} does not fit the model's "
                f"{list(self.shape)} (-1 = any size)",
            )
        if element_count([dim for dim in shape if dim]) > max_values:
            raise RequestError(
                400,
                f"input {self.name!r}: shape {list(shape)} is too large: its non-zero dimensions "
                f"multiply to more than the {max_values} values a request body of at most "
                f"{max_values} bytes can carry",
            )


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def decode_json_data(spec: TensorSpec, shape: Sequence[int], data: object) -> np.ndarray[Any, Any]:
    """The ``data`` of a JSON input (flat or nested, row-major) as an array of ``shape``.

    Values must be of the tensor's kind: integers for integer types (within range), numbers for
    floats (or the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` this server writes for
    them), booleans for BOOL, strings for BYTES; anything else is refused rather than cast.
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
    return _as_datatype(values, data, spec, where).reshape(shape)


def _as_datatype(
    values: np.ndarray[Any, Any], data: list[Any], spec: TensorSpec, where: str
) -> np.ndarray[Any, Any]:
    """``values`` (numpy's reading of ``data``) when it is already of the right kind; else
    ``data`` checked value by value, so a refusal names the offending value. (numpy turns
    ``[-1, 2**64 - 1]`` into floats and ``[1, "a"]`` into strings: only ``data`` tells.)"""
    dtype = DATATYPES[spec.datatype]
    kind = values.dtype.kind
    if values.size == 0:
        return values.astype(dtype)
    if spec.datatype == "BYTES":
        flat = values.ravel()
        _check_each(flat, lambda item: isinstance(item, str), where, "BYTES 'data' must be strings")
        return flat
    if spec.datatype == "BOOL":
        if kind != "b":
            _check_each(
                _objects(data),
                lambda item: isinstance(item, bool),
                where,
                "BOOL 'data' must be true/false",
            )
        return values
    if dtype.kind == "f":
        if kind in "iuf":
            return values.astype(dtype)
        items = _objects(data)
        _check_each(
            items,
            lambda item: _is_number(item) or (isinstance(item, str) and item in _NON_FINITE),
            where,
            f'{spec.datatype} \'data\' must be numbers (or "NaN", "Infinity", "-Infinity")',
        )
        try:
            return np.array([_NON_FINITE.get(item, item) for item in items], dtype=dtype)
        except OverflowError:  # a JSON integer beyond any float
            raise RequestError(
                400, f"{where}: {spec.datatype} values must lie within the type's range"
            ) from None
    if kind in "iu":
        low, high = values.min(), values.max()
    else:  # numpy fell back to floats or objects: integers past int64/uint64, or not integers
        values = _objects(data)
        _check_each(
            values,
            lambda item: isinstance(item, int) and not isinstance(item, bool),
            where,
            f"{spec.datatype} 'data' must be integers",
        )
        low, high = min(values), max(values)
    limits = np.iinfo(dtype)
    if low < limits.min or high > limits.max:
        raise RequestError(
            400, f"{where}: {spec.datatype} values must lie in {limits.min}..{limits.max}"
        )
    return np.array(values, dtype=dtype) if values.dtype.kind == "O" else values.astype(dtype)


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""JSON has no NaN or infinities; like protobuf's JSON mapping, they travel as these strings."""


def _objects(data: list[Any]) -> np.ndarray[Any, Any]:
    """The leaves of (nested) ``data``, row-major, as the Python objects JSON produced."""
    return np.array(data, dtype=object).ravel()


def _is_number(item: object) -> bool:
    return isinstance(item, int | float) and not isinstance(item, bool)


def _check_each(
    items: np.ndarray[Any, Any], valid: Callable[[Any], bool], where: str, expected: str
) -> None:
    for item in items:
        if not valid(item):
            raise RequestError(400, f"{where}: {expected}, not {_describe(item)}")


def _describe(item: object) -> str:
    if isinstance(item, bool):
        return f"the boolean {str(item).lower()}"
    if item is None:
        return "null"
    if isinstance(item, str):
        return f"the string {item[:40]!r}"
    if isinstance(item, int | float):
        return f"the number {item!r:.40}"
    return "an array or object"


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
    """An output's values as a flat JSON list (row-major).

    NaN and infinities have no JSON number: they become ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"``, as in protobuf's JSON mapping (the protocol's gRPC side), so strict parsers
    accept the response and clients that convert to floats (numpy, ``Number()``, Go's
    ``ParseFloat``) get the values back, where ``null`` would lose them.
    """
    flat = array.ravel()
    if datatype == "BYTES":
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in flat
        ]
    values: list[Any] = flat.tolist()
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        for index in np.flatnonzero(~np.isfinite(flat)).tolist():
            value = values[index]
            values[index] = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
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
