"""Recognise and validate an uploaded model without executing it.

ONNX files are parsed with their external data left on disk (no torch import, so the API can
call this on every upload); PyTorch archives are recognised from their zip layout before torch
ever sees them, so a plain pickle (``torch.save`` of an ``nn.Module`` or a state dict) is
rejected instead of unpickled, and TorchScript code that would run while loading (a
``__setstate__``) or touch files is rejected from its source text before ``torch.jit.load``.
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from aideploy.schema import Framework
from aideploy.settings import restrict_torch_unpickling
from optimizer.errors import InvalidModelError, UnsafeModelError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "MAX_TENSOR_BYTES",
    "ModelFormat",
    "ModelInfo",
    "TensorSpec",
    "external_data_files",
    "inspect_model",
    "load_exported_program",
    "load_onnx",
]

MAX_TENSOR_BYTES = 64 * 1024**3
"""A declared tensor larger than this is treated as a corrupt or hostile file."""

MAX_INFLATED_BYTES = 256 * 1024**2
"""Compressed members of a PyTorch archive may inflate to this much in total. torch stores
tensors uncompressed (those may be any size); only code and metadata are deflated, and they are
small, so more than this is a compression bomb."""

_PICKLE_PROTOCOL_OPCODE = 0x80
_TORCHSCRIPT_HOSTILE_CODE = re.compile(
    rb"__setstate__|\b(?:from_file|read_file|write_file)\b|\b(?:torch|aten)\.(?:save|load)\b"
)
"""TorchScript source that runs while loading (``__setstate__`` is called by the unpickler) or
reads and writes files. No exported model needs either; quantized modules' packed parameters
define ``__setstate__`` and are rejected too (export those with torch.export or to ONNX)."""
_SCAN_CHUNK = 1 << 20
_ACCEPTED_PYTORCH = (
    "save it with torch.jit.save (TorchScript, .pt) or torch.export.save (torch.export, .pt2)"
)


class ModelFormat(StrEnum):
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "torch.export"


class TensorSpec(BaseModel):
    """One input or output: Open Inference Protocol datatype and shape (-1 where dynamic)."""

    model_config = ConfigDict(frozen=True)

    name: str
    datatype: str
    """For TorchScript, which records no dtypes, a guess from how the module uses the input:
    ``INT64`` for embedding and gather indices, else ``FP32``; the data's dtype is used as is."""
    shape: list[int] | None
    """``None`` when the format does not record shapes (TorchScript)."""


class ModelInfo(BaseModel):
    """What :func:`inspect_model` learned about a model file."""

    model_config = ConfigDict(frozen=True)

    path: Path
    framework: Framework
    format: ModelFormat
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    size_bytes: int
    """On disk, including external data files."""
    opset: int | None = None
    producer: str | None = None


def inspect_model(path: Path) -> ModelInfo:
    """Detect the format, validate the file and return its signature.

    Raises :class:`~optimizer.errors.InvalidModelError` (or its subclass
    :class:`~optimizer.errors.UnsafeModelError`) with a one-line message.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"model: no file at {path}")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise InvalidModelError(f"model: {path.name} is empty")
    if zipfile.is_zipfile(path):
        return _inspect_pytorch_archive(path)
    if head[0] == _PICKLE_PROTOCOL_OPCODE:
        raise UnsafeModelError(
            f"model: {path.name} is a Python pickle, which is never loaded because unpickling "
            f"runs arbitrary code; {_ACCEPTED_PYTORCH}, or export to ONNX"
        )
    return _inspect_onnx(path)


# --- ONNX -----------------------------------------------------------------------------------


def load_onnx(path: Path) -> onnx.ModelProto:
    """Parse an ONNX file without its external data, with a one-line error when it is not one."""
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as exc:
        raise InvalidModelError(
            f"model: {path.name} is not a readable ONNX model or a truncated one ({exc})"
        ) from None
    if model.ir_version <= 0 or not model.graph.node or not model.graph.output:
        raise InvalidModelError(
            f"model: {path.name} is not an ONNX model (no IR version, nodes or outputs); "
            "expected .onnx, TorchScript .pt or torch.export .pt2"
        )
    return model


def external_data_files(model: onnx.ModelProto, folder: Path) -> dict[Path, int]:
    """The external data files of ``model`` and the bytes each must hold at least.

    Every location must be a relative path that stays inside ``folder``: a model naming
    ``../../etc/passwd`` or an absolute path is rejected before anything is read.
    """
    import onnx

    root = folder.resolve()
    needed: dict[Path, int] = {}
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        target = (root / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(root):
            raise UnsafeModelError(
                f"model: tensor {tensor.name!r} points its external data at {location!r}, "
                "outside the model's folder; external data must sit beside the model"
            )
        if not target.is_file():
            raise InvalidModelError(
                f"model: external data file {location!r} of tensor {tensor.name!r} is missing"
            )
        declared = _declared_bytes(tensor)
        offset = int(entries.get("offset", 0))
        length = int(entries.get("length", declared))
        needed[target] = max(needed.get(target, 0), offset + length)
    for target, end in needed.items():
        if target.stat().st_size < end:
            raise InvalidModelError(
                f"model: external data file {target.name!r} is truncated "
                f"({target.stat().st_size} bytes, tensors need {end})"
            )
    return needed


def _all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    import onnx

    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors.extend(
            attribute.t
            for attribute in node.attribute
            if attribute.type == onnx.AttributeProto.TENSOR
        )
    return tensors


def _declared_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes the tensor's declared shape needs; absurd or negative shapes are rejected."""
    import onnx

    if any(dim < 0 for dim in tensor.dims):
        raise InvalidModelError(f"model: tensor {tensor.name!r} declares a negative dimension")
    elements = math.prod(tensor.dims)
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError):
        itemsize = 1
    if elements * itemsize > MAX_TENSOR_BYTES:
        raise InvalidModelError(
            f"model: tensor {tensor.name!r} declares shape {list(tensor.dims)} "
            f"({elements * itemsize / 1024**3:.0f} GiB), larger than any real model"
        )
    return int(elements * itemsize)


def _check_embedded_sizes(model: onnx.ModelProto) -> None:
    """Raw data must hold exactly what the shape declares (catches truncation and forgery)."""
    import onnx

    for tensor in _all_tensors(model):
        declared = _declared_bytes(tensor)
        if tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
            continue
        if len(tensor.raw_data) != declared and tensor.data_type not in _PACKED_TYPES:
            raise InvalidModelError(
                f"model: tensor {tensor.name!r} holds {len(tensor.raw_data)} bytes but its "
                f"shape {list(tensor.dims)} needs {declared}; the file is truncated or corrupt"
            )


_PACKED_TYPES = frozenset({16, 17, 18, 19, 20, 21, 22, 23})
"""Sub-byte and special types whose raw size is not elements * itemsize (int4, fp8, ...)."""


def _tensor_specs(values: object, skip: set[str]) -> list[TensorSpec]:
    specs = []
    for value in values:  # type: ignore[attr-defined]
        if value.name in skip:
            continue
        tensor_type = value.type.tensor_type
        datatype = _OIP_DATATYPES.get(tensor_type.elem_type, "BYTES")
        shape = (
            [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim]
            if tensor_type.HasField("shape")
            else None
        )
        specs.append(TensorSpec(name=value.name, datatype=datatype, shape=shape))
    return specs


_OIP_DATATYPES = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
    16: "BF16",
}
"""ONNX ``TensorProto.DataType`` to Open Inference Protocol datatype names."""


def _inspect_onnx(path: Path) -> ModelInfo:
    model = load_onnx(path)
    _check_embedded_sizes(model)
    external = external_data_files(model, path.parent)
    initializers = {tensor.name for tensor in model.graph.initializer}
    opset = next(
        (entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None
    )
    return ModelInfo(
        path=path,
        framework=Framework.ONNX,
        format=ModelFormat.ONNX,
        inputs=_tensor_specs(model.graph.input, initializers),
        outputs=_tensor_specs(model.graph.output, set()),
        size_bytes=path.stat().st_size + sum(file.stat().st_size for file in external),
        opset=opset,
        producer=model.producer_name or None,
    )


# --- PyTorch --------------------------------------------------------------------------------


def pytorch_format(path: Path) -> ModelFormat:
    """Tell TorchScript from torch.export from a plain pickle by the archive's entries alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidModelError(f"model: {path.name} is a damaged zip archive ({exc})") from None
    _check_inflated_sizes(path, members)
    names = [member.filename for member in members]
    if any(name.endswith("archive_format") for name in names):
        return ModelFormat.TORCH_EXPORT
    if any("/code/" in name for name in names) and any(
        name.endswith("constants.pkl") for name in names
    ):
        _check_torchscript_code(path, members)
        return ModelFormat.TORCHSCRIPT
    if any(name.endswith("data.pkl") for name in names):
        raise UnsafeModelError(
            f"model: {path.name} is a pickled PyTorch object (torch.save), which is never "
            f"loaded because unpickling runs arbitrary code; {_ACCEPTED_PYTORCH}"
        )
    raise InvalidModelError(
        f"model: {path.name} is a zip archive but not a TorchScript or torch.export model"
    )


def _check_inflated_sizes(path: Path, members: list[zipfile.ZipInfo]) -> None:
    """Reject compression bombs from the zip directory, before anything is inflated."""
    inflated = 0
    for member in members:
        if member.compress_type == zipfile.ZIP_STORED:
            if member.file_size != member.compress_size:
                raise InvalidModelError(
                    f"model: {path.name} is a damaged zip archive (stored member "
                    f"{member.filename!r} declares {member.file_size} bytes in "
                    f"{member.compress_size})"
                )
            continue
        inflated += member.file_size
    if inflated > MAX_INFLATED_BYTES:
        raise UnsafeModelError(
            f"model: {path.name} is a compression bomb: its compressed members inflate to "
            f"{inflated} bytes (at most {MAX_INFLATED_BYTES}); torch stores tensors uncompressed"
        )


def _check_torchscript_code(path: Path, members: list[zipfile.ZipInfo]) -> None:
    """Reject TorchScript whose code would run on ``torch.jit.load`` or touch files.

    Loading compiles the archive's ``code/**.py`` and calls each object's ``__setstate__``
    while unpickling ``data.pkl``; reading the source first keeps that code from ever running
    in the API process.
    """
    overlap = 64  # a match split across two chunks is still found
    with zipfile.ZipFile(path) as archive:
        for member in members:
            if "/code/" not in member.filename or not member.filename.endswith(".py"):
                continue
            tail = b""
            with archive.open(member) as handle:
                while chunk := handle.read(_SCAN_CHUNK):
                    found = _TORCHSCRIPT_HOSTILE_CODE.search(tail + chunk)
                    if found is not None:
                        raise UnsafeModelError(
                            f"model: {path.name} is TorchScript whose code "
                            f"({member.filename.split('/code/', 1)[1]}) uses "
                            f"{found.group().decode()}, which would run while loading or touch "
                            "files, so it is never loaded; export the model with torch.export "
                            "(.pt2) or to ONNX"
                        )
                    tail = chunk[-overlap:]


def load_exported_program(path: Path) -> Any:
    """``torch.export.load`` with every pickle inside restricted (see
    :func:`aideploy.settings.restrict_torch_unpickling`): sample inputs, constants and pickled
    weights of a hostile archive cannot run code."""
    import torch

    restrict_torch_unpickling()
    return torch.export.load(str(path))


def _inspect_pytorch_archive(path: Path) -> ModelInfo:
    model_format = pytorch_format(path)
    try:
        import torch
    except ImportError:  # pragma: no cover - the optimizer extra installs torch
        raise InvalidModelError(
            "model: PyTorch models need the optimizer extra (pip install 'aideploy[optimizer]')"
        ) from None
    try:
        if model_format is ModelFormat.TORCHSCRIPT:
            module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            inputs, outputs = _torchscript_signature(module)
        else:
            inputs, outputs = _exported_signature(load_exported_program(path))
    except pickle.UnpicklingError:
        raise UnsafeModelError(
            f"model: {path.name} holds a pickle that only loads by running arbitrary code, "
            "which is never done"
        ) from None
    except (RuntimeError, ValueError, KeyError, AttributeError, zipfile.BadZipFile) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidModelError(
            f"model: {path.name} looks like {model_format.value} but does not load ({first_line})"
        ) from None
    return ModelInfo(
        path=path,
        framework=Framework.PYTORCH,
        format=model_format,
        inputs=inputs,
        outputs=outputs,
        size_bytes=path.stat().st_size,
    )


_TORCH_DATATYPES = {
    "torch.float32": "FP32",
    "torch.float16": "FP16",
    "torch.bfloat16": "BF16",
    "torch.float64": "FP64",
    "torch.int64": "INT64",
    "torch.int32": "INT32",
    "torch.int16": "INT16",
    "torch.int8": "INT8",
    "torch.uint8": "UINT8",
    "torch.bool": "BOOL",
}


_INDEX_ARGUMENTS = {
    "aten::embedding": 1,
    "aten::embedding_bag": 1,
    "aten::index_select": 2,
    "aten::gather": 2,
}
"""TorchScript ops whose argument at that position must be an integer index tensor."""


def _torchscript_signature(module: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """TorchScript records argument names but no shapes or dtypes.

    An input the module feeds straight into an embedding or gather as indices is ``INT64``;
    any other is recorded as ``FP32``, a guess the user's data overrides. A returned tuple
    counts as one output per element.
    """
    schema = module.forward.schema
    names = [argument.name for argument in schema.arguments[1:]]  # the first is the module
    index_inputs = _torchscript_index_inputs(module, names)
    inputs = [
        TensorSpec(name=name, datatype="INT64" if name in index_inputs else "FP32", shape=None)
        for name in names
    ]
    count = 0
    for returned in schema.returns:
        elements = getattr(returned.type, "elements", None)
        count += len(elements()) if callable(elements) else 1
    outputs = [
        TensorSpec(name=f"output_{index}", datatype="FP32", shape=None) for index in range(count)
    ]
    return inputs, outputs


def _torchscript_index_inputs(module: Any, names: list[str]) -> set[str]:
    """The forward arguments used directly as indices anywhere in the inlined graph."""
    import torch

    try:
        graph = module.forward.graph.copy()
        torch._C._jit_pass_inline(graph)
    except (RuntimeError, AttributeError):  # a best-effort hint: the data's dtypes decide
        return set()
    values = list(graph.inputs())[1:]  # the first is ``self``
    return {
        name
        for name, value in zip(names, values, strict=True)
        if any(_INDEX_ARGUMENTS.get(use.user.kind()) == use.offset for use in value.uses())
    }


def _exported_signature(program: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Placeholders of a torch.export program carry fake tensors with (symbolic) shapes."""
    import torch

    signature = program.graph_signature
    user_inputs = set(signature.user_inputs)
    nodes = {node.name: node for node in program.graph.nodes}

    def spec(name: str) -> TensorSpec:
        value = nodes[name].meta.get("val") if name in nodes else None
        if not isinstance(value, torch.Tensor):
            return TensorSpec(name=name, datatype="FP32", shape=None)
        shape = [dim if isinstance(dim, int) else -1 for dim in value.shape]
        return TensorSpec(
            name=name, datatype=_TORCH_DATATYPES.get(str(value.dtype), "BYTES"), shape=shape
        )

    inputs = [
        spec(node.name)
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in user_inputs
    ]
    outputs = [spec(str(name)) for name in signature.user_outputs]
    return inputs, outputs
