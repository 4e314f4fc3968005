"""``aideploy serve``: the serving runtime from the ``aideploy`` command.

It runs exactly what ``python -m serving`` (the container entry point) runs; only the option
parsing differs. Nothing heavy is imported at module level (onnxruntime loads when the
command runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aideploy.console import fail

__all__ = ["serve_command"]


def serve_command(
    model: Annotated[
        list[str] | None,
        typer.Argument(
            help="A .onnx file, a folder holding one, or an s3:// gs:// az:// file:// URI; "
            "NAME=SOURCE names it. Several may be given. [env: AIDEPLOY_SERVE_MODEL_URI]",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Model name (single model). [env: AIDEPLOY_SERVE_MODEL_NAME]")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default 8080, or $PORT).", min=0, max=65535)
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="onnxruntime threads (default: the CPUs available, cgroup-aware).", min=1
        ),
    ] = None,
    parallel_runs: Annotated[
        int | None,
        typer.Option(
            help="Runs at once, sharing the threads (1 = lowest latency; more = throughput).",
            min=1,
        ),
    ] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option(help="Adaptive batching: rows merged into one run (1 = off).", min=1),
    ] = None,
    max_batch_delay_ms: Annotated[
        float | None,
        typer.Option(help="Adaptive batching: longest wait for company, in ms.", min=0),
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option(
            help="Inference requests admitted at once; more get 503 (0 = no limit).", min=0
        ),
    ] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds before an inference answers 504 (0 = no limit).", min=0),
    ] = None,
    spin_wait: Annotated[
        bool | None,
        typer.Option(
            "--spin-wait/--no-spin-wait",
            help="Let onnxruntime's idle threads spin inside a run (default: yes).",
        ),
    ] = None,
    max_body_bytes: Annotated[
        str | None, typer.Option(help="Largest request body, e.g. 64MiB.")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Where object-store models are downloaded.")
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Version served under /versions/{v} (default 1).")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
) -> None:
    """Serve ONNX models over the Open Inference Protocol (KServe v2) until Ctrl-C/SIGTERM.

    Every option also reads its AIDEPLOY_SERVE_* variable (see serving/config.py).
    """
    from aideploy.errors import AideployError
    from serving.config import load_config
    from serving.launch import prepare, run

    prepare()
    options: dict[str, object | None] = {
        "model": model or None,
        "name": name,
        "host": host,
        "port": port,
        "threads": threads,
        "parallel_runs": parallel_runs,
        "max_batch_size": max_batch_size,
        "max_batch_delay_ms": max_batch_delay_ms,
        "max_concurrency": max_concurrency,
        "request_timeout": request_timeout,
        "spin_wait": spin_wait,
        "max_body_bytes": max_body_bytes,
        "model_dir": model_dir,
        "model_version": model_version,
        "log_level": log_level,
    }
    try:
        config = load_config(options)
    except AideployError as exc:
        fail(str(exc))
    code = run(config)
    if code:
        raise typer.Exit(code)
