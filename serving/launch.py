"""Start the server in the order that makes the cold start short; both entry points use it.

Each entry point first calls :func:`single_threaded_blas`; onnxruntime and numpy are imported first (they hold the GIL; nothing would overlap with them),
then the models start loading on a background thread, and only then does this thread import
the event loop and HTTP layer: session creation releases the GIL, so those imports and the
port binding happen during it rather than after it.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from serving.config import ServeConfig

__all__ = ["run", "single_threaded_blas"]


def single_threaded_blas() -> None:
    """Keep numpy's OpenBLAS to the calling thread; call before numpy is first imported.

    The server never does linear algebra in numpy (onnxruntime does the math, on its own
    threads sized by ``--threads``), yet OpenBLAS starts a worker per core when numpy loads,
    which spins for ~0.1 s: on 2 cores it took one from building the session during the cold
    start (int8 encoder: session 81 -> 69 ms, first answer 190 -> 171 ms). An explicit
    ``OPENBLAS_NUM_THREADS`` is kept."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


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
