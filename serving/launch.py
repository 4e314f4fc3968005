"""Start the server in the order that makes the cold start short; both entry points use it.

Each entry point first calls :func:`prepare`, then imports onnxruntime and numpy (they hold
the GIL; nothing would overlap with them); then the models
start loading on a background thread, and only then does this thread import the event loop
and HTTP layer: session creation releases the GIL, so those imports and the
port binding happen during it rather than after it.
"""

from __future__ import annotations

import gc
import logging
import sys
import time

from serving.config import ServeConfig, single_threaded_blas

__all__ = ["prepare", "run"]


def prepare() -> None:
    """Set the process up for a short start; call before numpy is first imported.

    numpy's OpenBLAS stays on one thread (see :func:`serving.config.single_threaded_blas`), and
    the cyclic garbage collector is off until the models are ready, when the server turns it
    back on with the start-up's objects frozen (``serving.server``): importing numpy and
    onnxruntime sets off dozens of collections otherwise."""
    single_threaded_blas()
    gc.disable()


def run(config: ServeConfig, started: float | None = None, imported: float | None = None) -> int:
    """Serve ``config`` until SIGTERM/SIGINT; returns the process exit code. ``started`` and
    ``imported``: ``perf_counter`` at process start and after the heavy imports, if known."""
    started = time.perf_counter() if started is None else started
    logging.basicConfig(
        level=config.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from serving.model import start_loading

    loader = start_loading(config)
    from serving.server import serve

    return serve(config, loader, started, imported)
