"""The server's life: listen at once, load and warm up the models, serve, drain on SIGTERM.

The port opens before the models are loaded: liveness answers during a long download, and on
a scale-to-zero platform the request that woke the instance is accepted immediately and waits
for the model instead of being refused, and its run is the model's warm-up. Readiness turns true
after every model's warm-up run.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor

from aideploy.errors import AideployError
from serving.app import InferenceApp
from serving.config import ServeConfig
from serving.http import HttpServer
from serving.metrics import Metrics
from serving.model import ServedModel, needs_batch_check, warm_thread, warm_up

__all__ = ["serve"]

log = logging.getLogger("serving")


def serve(
    config: ServeConfig,
    loader: list[Future[ServedModel]],
    started: float,
    imported: float | None = None,
) -> int:
    """Run until SIGTERM/SIGINT while ``loader`` delivers the models; the exit code is 0 after a
    clean drain, 2 if a model could not be loaded (a user error: the log line says why).
    ``started`` and ``imported`` (``perf_counter`` at process start and once numpy and
    onnxruntime were imported) anchor the start-up timeline in ``/metrics``."""
    return asyncio.run(_serve(config, loader, started, imported))


async def _serve(
    config: ServeConfig,
    loader: list[Future[ServedModel]],
    started: float,
    imported: float | None,
) -> int:
    loop = asyncio.get_running_loop()
    # One inference thread per parallel run (one by default: onnxruntime already spreads a run
    # over `threads` cores, and runs queued one after another keep the CPU cache warm).
    executor = ThreadPoolExecutor(max_workers=config.parallel_runs, thread_name_prefix="inference")
    metrics = Metrics()
    if imported is not None:
        metrics.start_phases["imports"] = imported - started
    app = InferenceApp(config, metrics, executor)
    http = HttpServer(
        app.handle,
        metrics,
        max_body_bytes=config.max_body_bytes,
        keepalive_seconds=config.keepalive_seconds,
        refused=app.refused,
    )
    usage = None
    if config.usage_url and config.usage_token:
        from serving.usage import UsageReporter  # only deployments that report pay its import

        usage = UsageReporter(metrics, config.usage_url, config.usage_token, config.usage_interval)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        port = await http.listen(config.host, config.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        return 2
    metrics.start_phases["listening"] = time.perf_counter() - started
    log.info(
        "listening on http://%s:%d (loading %d model(s))", config.host, port, len(config.models)
    )
    if usage is not None:
        usage.start()
    loading = loop.create_task(_receive_models(config, app, loader, started, metrics))
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if loading.done() and loading.exception() is not None:
        error = loading.exception()
        if isinstance(error, AideployError):
            log.error("%s", error)
            code = 2
        else:
            log.error("loading the models failed", exc_info=error)
            code = 1
    else:
        await stopping
        log.info("shutting down: finishing %d in-flight request(s)", metrics.in_flight)
    loading.cancel()
    app.stop()
    clean = await http.drain(0.0 if code else config.shutdown_grace_seconds)
    app.watchdog.close()
    executor.shutdown(wait=True, cancel_futures=True)
    if usage is not None:
        await usage.stop()
    log.info("stopped%s", "" if clean else " (some requests were cut off)")
    return code


def _collect_garbage_from_now_on() -> None:
    """Turn the cyclic garbage collector back on once the models are ready, with everything
    allocated so far frozen out of its collections.

    Both entry points start with it off (:func:`serving.launch.prepare`): importing numpy and
    onnxruntime allocates enough objects to set off dozens of collections, each scanning all
    the objects alive by then (on 2 cores, medians of 8 starts: 131 and 147 ms of imports
    without them, 175 and 187 ms with). Those objects live as long as the process: later
    collections need not scan them."""
    gc.freeze()
    gc.enable()


async def _receive_models(
    config: ServeConfig,
    app: InferenceApp,
    loader: list[Future[ServedModel]],
    started: float,
    metrics: Metrics,
) -> None:
    """Warm each model up on the inference thread as soon as the loader thread has opened it,
    then make it servable and ready.

    When requests already wait for the model (the one that woke a scaled-to-zero instance),
    the first of their runs is the warm-up: a run on zeros before it would add a whole
    inference to the cold start its client waits through. Not with batching to verify (that
    takes a run at batch 2 before batching starts) nor with parallel runs (every inference
    thread needs its first run)."""
    loop = asyncio.get_running_loop()
    for future in loader:
        model = await asyncio.wrap_future(future)
        cold = (
            app.waiting(model.name)
            and config.parallel_runs == 1
            and not needs_batch_check(model, config)
        )
        if not (cold and await app.add_cold_model(model)):
            await loop.run_in_executor(app.executor, warm_up, model, config)
        if config.parallel_runs > 1:  # as many runs at once as threads: each thread gets one
            await asyncio.gather(
                *(
                    loop.run_in_executor(app.executor, warm_thread, model)
                    for _ in range(config.parallel_runs)
                )
            )
        app.add_model(model)
        log.info(
            "model %s ready in %.3fs (%s; %s; batching %s)",
            model.name,
            model.load_seconds,
            model.file,
            ", ".join(f"{phase} {seconds:.3f}s" for phase, seconds in model.phases.items()),
            "on" if model.batchable and config.max_batch_size > 1 else "off",
        )
    _collect_garbage_from_now_on()
    metrics.start_phases["ready"] = time.perf_counter() - started
    log.info(
        "all models ready %.3fs after start (%s)",
        metrics.start_phases["ready"],
        ", ".join(f"{phase} at {seconds:.3f}s" for phase, seconds in metrics.start_phases.items()),
    )
