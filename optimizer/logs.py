"""Keep third-party chatter (ONNX Runtime's quantizers log hints at WARNING on the root
logger) out of the command's output; real failures still raise."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["quiet_logs"]


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
