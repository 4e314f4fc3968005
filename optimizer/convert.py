"""PyTorch (TorchScript ``.pt``, ``torch.export`` ``.pt2``) to ONNX with dynamic axes.

The batch axis of every input and output becomes dynamic; integer inputs of rank 2 or more
(token ids, attention masks) also get a dynamic sequence axis, and so do the output axes that
follow it. TorchScript records no shapes or dtypes, so its example inputs come from the user's
data; a torch.export program brings its own, and one exported with a static batch (or
sequence) is re-exported with dynamic ones where its graph allows. Any failure while converting
is one :class:`~optimizer.errors.InvalidModelError` line, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aideploy.errors import AideployError
from optimizer.data import Dataset, load_dataset
from optimizer.errors import InvalidModelError
from optimizer.logs import quiet_logs
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
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{path.stem}.onnx"
    if info.format is ModelFormat.TORCHSCRIPT:
        examples = _examples_from_data(info.inputs, data, path)
        with _converting(path):
            import torch

            module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            module.eval()
            _export_torchscript(module, examples, info.inputs, target)
    else:
        with _converting(path):
            program = load_exported_program(path)
            _export_program(_with_dynamic_axes(program), info.inputs, target)
    return target


@contextlib.contextmanager
def _converting(path: Path) -> Iterator[None]:
    """Quiet the exporters and turn whatever they raise into one line naming the model."""
    try:
        # The exporters print progress, log warnings and emit deprecation chatter; keep the
        # command's output (and --json) clean.
        with (
            quiet_logs(),
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    except AideployError:
        raise
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidModelError(
            f"model: could not convert {path.name} to ONNX ({first_line})"
        ) from exc


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


def _is_token_input(example: torch.Tensor) -> bool:
    """Integer tensors of rank 2 or more: ids and masks with a sequence axis."""
    return not example.is_floating_point() and example.dim() >= 2


def _flat_outputs(outputs: Any) -> list[torch.Tensor]:
    return list(outputs) if isinstance(outputs, tuple | list) else [outputs]


def _output_sequence_axes(
    module: Any, examples: tuple[torch.Tensor, ...], outputs: list[torch.Tensor]
) -> list[set[int]]:
    """Which output axes follow the token inputs' sequence axis, found by running one shorter.

    Empty sets when there are no token inputs, the sequence is too short to shorten, or the
    module rejects the shorter inputs (its sequence length is then fixed anyway).
    """
    empty: list[set[int]] = [set() for _ in outputs]
    if not any(_is_token_input(example) and example.shape[1] > 1 for example in examples):
        return empty
    shorter = tuple(
        example[:, :-1] if _is_token_input(example) else example for example in examples
    )
    try:
        probe = _flat_outputs(module(*shorter))
    except Exception:  # a module of fixed sequence length simply has no sequence axis
        return empty
    if len(probe) != len(outputs):
        return empty
    return [
        {
            axis
            for axis in range(1, min(full.dim(), short.dim()))
            if full.shape[axis] != short.shape[axis]
        }
        for full, short in zip(outputs, probe, strict=True)
    ]


def _export_torchscript(
    module: Any, examples: tuple[torch.Tensor, ...], inputs: list[TensorSpec], target: Path
) -> None:
    """TorchScript modules go through the TorchScript-based exporter."""
    import torch

    names = [spec.name for spec in inputs]
    with torch.no_grad():
        outputs = _flat_outputs(module(*examples))
        sequence_axes = _output_sequence_axes(module, examples, outputs)
    output_names = [f"output_{index}" for index in range(len(outputs))]
    dynamic: dict[str, dict[int, str]] = {}
    for name, example in zip(names, examples, strict=True):
        dynamic[name] = {0: "batch", 1: "sequence"} if _is_token_input(example) else {0: "batch"}
    for name, axes in zip(output_names, sequence_axes, strict=True):
        dynamic[name] = {0: "batch", **dict.fromkeys(sorted(axes), "sequence")}
    _atomic_write(
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


def _with_dynamic_axes(program: Any) -> Any:
    """The program re-exported with a dynamic batch (and token sequence) axis, where possible.

    A program exported with static shapes guards its inputs; with the guards removed, its
    module is exported again from its own example inputs with a ``batch`` dimension (and a
    ``sequence`` one for integer inputs of rank 2+), then with ``batch`` alone. torch.export
    refuses when the graph really depends on the static size, and the program is kept as it is;
    the optimizer then reports the static batch.
    """
    import torch

    examples = program.example_inputs
    if examples is None or examples[1]:
        return program  # keyword inputs would need their argument names: keep as is
    args = tuple(examples[0])
    tensors = [arg for arg in args if isinstance(arg, torch.Tensor) and arg.dim() >= 1]
    if not tensors:
        return program
    wanted_sequence = any(_is_token_input(arg) for arg in tensors)
    if not _has_static_axes(program, sequence=wanted_sequence):
        return program
    module = program.module()
    for key, hook in list(module._forward_pre_hooks.items()):
        if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
            del module._forward_pre_hooks[key]
    for node in list(module.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            module.graph.erase_node(node)
    module.recompile()
    batched = tuple(_batch_of_two(arg) for arg in args)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    attempts = [True, False] if wanted_sequence else [False]
    for with_sequence in attempts:
        shapes = tuple(
            None
            if not isinstance(arg, torch.Tensor) or arg.dim() == 0
            else {0: batch, 1: sequence}
            if with_sequence and _is_token_input(arg)
            else {0: batch}
            for arg in batched
        )
        try:
            return torch.export.export(module, batched, dynamic_shapes=shapes)
        except Exception:  # noqa: S112 - the graph depends on the size: try less, or keep
            continue
    return program


def _has_static_axes(program: Any, *, sequence: bool) -> bool:
    """Whether some user input has a fixed batch (or, for token inputs, sequence) size."""
    import torch

    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            continue
        axes = [0, 1] if sequence and _is_token_input(value) else [0]
        if any(isinstance(value.shape[axis], int) for axis in axes):
            return True
    return False


def _batch_of_two(arg: Any) -> Any:
    """Examples of batch 1 would make torch.export specialise the batch to 1."""
    import torch

    if isinstance(arg, torch.Tensor) and arg.dim() >= 1 and arg.shape[0] == 1:
        return torch.cat([arg, arg])
    return arg


def _export_program(program: Any, inputs: list[TensorSpec], target: Path) -> None:
    import torch

    _atomic_write(
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


def _atomic_write(export: Callable[[Path], object], target: Path) -> None:
    """Write next to ``target`` and rename, so a failed export leaves nothing behind."""
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        export(partial)
        partial.replace(target)
