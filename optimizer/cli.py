"""``aideploy optimize``: the optimizer as a command, with a progress bar and a results table.

Nothing heavy is imported at module level; ``aideploy --help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from optimizer.pipeline import OptimizationResult

__all__ = ["optimize_command"]

_METHODS = ("quantization", "pruning", "graph", "auto")
_PRECISIONS = ("int8", "int8-static", "fp16", "int4")


def _batch_sizes(value: str) -> list[int]:
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--batch-sizes: expected comma-separated integers like 1,8, got {value!r}"
        ) from None
    if not sizes:
        raise ValueError("--batch-sizes: give at least one batch size, e.g. 1,8")
    return sizes


def optimize_command(
    model: Annotated[
        Path, typer.Argument(help="ONNX (.onnx), TorchScript (.pt) or torch.export (.pt2) model.")
    ],
    method: Annotated[str, typer.Option(help="quantization, pruning, graph or auto.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Folder the result goes into (a new subfolder per input and request).",
        ),
    ],
    precision: Annotated[str | None, typer.Option(help="int8, int8-static, fp16 or int4.")] = None,
    sparsity: Annotated[
        float | None, typer.Option(help="Pruning: fraction of neurons/channels removed, 0-0.95.")
    ] = None,
    then_quantize: Annotated[
        bool, typer.Option("--then-quantize", help="Pruning: quantize to int8 afterwards.")
    ] = False,
    target_size: Annotated[
        str | None, typer.Option(help="Auto: largest acceptable size, e.g. 25MB.")
    ] = None,
    target_latency: Annotated[
        float | None,
        typer.Option(help="Auto: largest acceptable p50 latency in ms at the first batch size."),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None, typer.Option(help="Most accuracy to lose, in points of the metric.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Calibration/evaluation data: .npz of arrays by input name, optional 'labels'."
        ),
    ] = None,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes latency is measured at.")] = "1,8",
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads for latency (default: a deployment's cpu).")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="classification, embedding or regression (guessed if omitted)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
) -> None:
    """Quantize, prune or graph-optimize a model and measure what it gains and costs."""
    from pydantic import ValidationError

    from aideploy.console import fail
    from aideploy.errors import AideployError
    from aideploy.schema import OptimizationOptions, OptimizationRequest, field_errors
    from optimizer.errors import DISTILLATION_NOT_SUPPORTED

    if method == "distillation":
        fail(f"--{DISTILLATION_NOT_SUPPORTED}")
    if method not in _METHODS:
        fail(f"--method: expected one of {', '.join(_METHODS)}, got {method!r}")
    if precision is not None and precision not in _PRECISIONS:
        fail(f"--precision: expected one of {', '.join(_PRECISIONS)}, got {precision!r}")
    metadata: dict[str, Any] = {
        key: value
        for key, value in {
            "precision": precision,
            "sparsity": sparsity,
            "max_accuracy_drop": max_accuracy_drop,
            "threads": threads,
            "task": task,
            "then_quantize": then_quantize or None,
        }.items()
        if value is not None
    }
    try:
        metadata["batch_sizes"] = _batch_sizes(batch_sizes)
        OptimizationOptions.model_validate(metadata)
        request = OptimizationRequest(
            method=method,
            target_size=target_size,
            target_latency=target_latency,
            metadata=metadata,
        )
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            fail(
                "; ".join(f"--{e.field.replace('_', '-')}: {e.message}" for e in field_errors(exc))
            )
        fail(str(exc))
    try:
        result = _run_with_progress(model, request, output, data, quiet=as_json)
    except AideployError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        _print_table(result)


def _run_with_progress(
    model: Path, request: Any, output: Path, data: Path | None, *, quiet: bool
) -> OptimizationResult:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from optimizer.pipeline import ProgressEvent, optimize

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]optimize[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=quiet,
        transient=True,
    ) as bar:
        task_id = bar.add_task("inspecting the model", total=None)

        def on_progress(event: ProgressEvent) -> None:
            bar.update(task_id, completed=event.step, total=event.total, description=event.message)

        return optimize(model, request, output, data=data, progress=on_progress)


def _print_table(result: OptimizationResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=f"aideploy optimize: {result.method.value}, {result.threads} thread(s)",
        caption=(
            f"accuracy metric: {result.accuracy_metric} of output {result.accuracy.output!r}; "
            "> marks the chosen candidate"
        ),
    )
    table.add_column("candidate", style="bold", no_wrap=True)
    table.add_column("size MB", justify="right")
    table.add_column("size", justify="right")
    for stats in result.original_latency:
        table.add_column(f"p50 b{stats.batch_size} ms", justify="right")
    table.add_column("latency", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("targets")
    table.add_row(
        "original",
        f"{result.original_size_bytes / 1e6:.2f}",
        "",
        *(_ms(stats.p50_ms) for stats in result.original_latency),
        "",
        f"{result.accuracy.original:.2f}",
        "",
        style="dim",
    )
    for index, candidate in enumerate(result.candidates):
        chosen = index == 0
        table.add_row(
            f"{'> ' if chosen else '  '}{candidate.name}",
            f"{candidate.size_bytes / 1e6:.2f}",
            f"{-candidate.size_reduction_percentage:+.1f}%",
            *(_ms(stats.p50_ms) for stats in candidate.latency),
            f"{-candidate.latency_reduction_percentage:+.1f}%",
            candidate.accuracy.describe_change(),
            "met" if candidate.targets_met else "; ".join(candidate.unmet_targets),
            style="green" if chosen else None,
        )
    console.print(table)
    for note in result.notes:
        console.print(f"[dim]note:[/] {note}", highlight=False)
    state = "all targets met" if result.targets_met else f"unmet: {'; '.join(result.unmet_targets)}"
    console.print(
        f"artifact: {result.artifact}  ({state}{', cached' if result.cached else ''})",
        highlight=False,
    )


def _ms(value: float) -> str:
    """Milliseconds with three significant digits: 0.0123, 1.23, 123."""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"
