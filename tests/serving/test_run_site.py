"""Where runs execute: short ones on the event loop's thread, long or time-limited ones off it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from serving.app import INLINE_RUN_SECONDS, _RunSite


class _Session:
    """A stand-in for ``ServedModel.run`` that takes ``seconds`` per run."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def run(self, inputs: dict[str, Any], outputs: list[str], options: Any = None) -> list[Any]:
        time.sleep(self.seconds)
        return [np.zeros(1)]


def test_short_runs_go_inline_once_one_was_timed() -> None:
    session = _Session()
    session.seconds = 0.001
    site = _RunSite(session.run, inline_allowed=True)
    assert not site.inline  # nothing timed yet: the first run goes to the inference thread
    site.run({}, [])
    assert site.inline
    site.offloaded = 1  # a run on the inference thread: the next one queues behind it
    assert not site.inline


def test_long_runs_stay_on_the_inference_thread() -> None:
    session = _Session()
    site = _RunSite(session.run, inline_allowed=True)
    session.seconds = INLINE_RUN_SECONDS * 1.5
    site.run({}, [])
    assert not site.inline
    session.seconds = 0.0
    for _ in range(20):  # the average follows the runs down again
        site.run({}, [])
    assert site.inline


def test_runs_stay_off_the_loop_where_inline_is_not_allowed() -> None:
    """As with parallel runs, which execute side by side on their own threads."""
    site = _RunSite(_Session().run, inline_allowed=False)
    site.run({}, [])
    assert not site.inline
