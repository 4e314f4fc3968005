"""PyTorch (TorchScript ``.pt``, ``torch.export`` ``.pt2``) to ONNX with dynamic axes.

For TorchScript the batch axis of every input and output becomes dynamic; integer inputs of rank 2 or more
(token ids, attention masks) also get a dynamic sequence axis. TorchScript records no shapes,
so its example inputs come from the user's data; a torch.export program keeps the dynamic
dimensions it was exported with.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimizer.data import Dataset, load_dataset
from optimizer.errors import InvalidModelError
from optimizer.model_info import ModelFormat, TensorSpec, inspect_model, load_exported_program

if TYPE_CHECKING:
    import torch

__all__ = ["to_onnx"]

_OPSET = 18


def to_onnx(path: Path, out_dir: Path, *, data: Path | Dataset | None = None) -> Path:
    """Convert a PyTorch model file to ``out_dir/<stem>.onnx`` and return its path.

    ONNX input is returned unchanged. ``data`` (an ``.npz`` or a loaded dataset) provides the
    example inputs TorchScript needs; torch.export programs bring their own.
    """
    info = inspect_model(path)
    if info.format is ModelFormat.ONNX:
        return path
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{path.stem}.onnx"
    if info.format is ModelFormat.TORCHSCRIPT:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        module.eval()
        examples = _examples_from_data(info.inputs, data, path)
        _export_legacy(module, examples, info.inputs, target)
    else:
        _export_program(load_exported_program(path), info.inputs, target)
    return target


def _examples_from_data(
    inputs: list[TensorSpec], data: Path | Dataset | None, path: Path
) -> tuple[torch.Tensor, ...]:
    import torch

    if data is None:
        raise InvalidModelError(
            f"model: {path.name} records no input shapes; pass --data FILE.npz with example "
            f"inputs named {[spec.name for spec in inputs]}"
        )
    dataset = data if isinstance(data, Dataset) else load_dataset(data, inputs)
    batch = dataset.batch(min(2, dataset.samples))
    return tuple(torch.from_numpy(batch[spec.name]) for spec in inputs)


def _dynamic_axes(examples: tuple[torch.Tensor, ...]) -> list[dict[int, str]]:
    """Batch axis for every input; a sequence axis too for integer token-like inputs."""
    axes = []
    for example in examples:
        entry = {0: "batch"}
        if not example.is_floating_point() and example.dim() >= 2:
            entry[1] = "sequence"
        axes.append(entry)
    return axes


def _export_legacy(
    module: Any, examples: tuple[torch.Tensor, ...], inputs: list[TensorSpec], target: Path
) -> None:
    """TorchScript modules go through the TorchScript-based exporter."""
    import torch

    names = [spec.name for spec in inputs]
    with torch.no_grad():
        outputs = module(*examples)
    count = len(outputs) if isinstance(outputs, tuple | list) else 1
    output_names = [f"output_{index}" for index in range(count)]
    dynamic = dict(zip(names, _dynamic_axes(examples), strict=True))
    dynamic.update({name: {0: "batch"} for name in output_names})
    _atomic_export(
        lambda partial: torch.onnx.export(
            module,
            examples,
            str(partial),
            dynamo=False,
            opset_version=_OPSET,
            input_names=names,
            output_names=output_names,
            dynamic_axes=dynamic,
        ),
        target,
    )


def _export_program(program: Any, inputs: list[TensorSpec], target: Path) -> None:
    """Export the program with the dynamic dimensions it was exported with.

    A program's graph is specialised to its static dimensions (re-exporting its module with a
    dynamic batch fails its shape guards), so a static batch stays static; the optimizer's
    report then says so. Export with ``dynamic_shapes={..: {0: Dim("batch")}}`` to avoid it.
    """
    import torch

    _atomic_export(
        lambda partial: torch.onnx.export(
            program,
            (),
            str(partial),
            dynamo=True,
            opset_version=_OPSET,
            input_names=[spec.name for spec in inputs],
            external_data=False,
            optimize=True,
            verbose=False,
        ),
        target,
    )


def _atomic_export(export: Any, target: Path) -> None:
    """Write next to ``target`` and rename, so a failed export leaves nothing behind."""
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        try:
            # The exporters print progress and deprecation chatter; keep --json output clean.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export(partial)
        except Exception as exc:
            first_line = (
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
            raise InvalidModelError(
                f"model: could not convert {target.stem} to ONNX ({first_line})"
            ) from exc
        partial.replace(target)
