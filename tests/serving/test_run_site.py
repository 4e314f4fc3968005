"""Where runs execute: short ones on the event loop's thread, long or time-limited ones off it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from serving.app import INLINE_RUN_SECONDS, _RunSite


def _sleeping(seconds: float) -> Any:
    def run(inputs: dict[str, Any], outputs: list[str]) -> list[Any]:
        time.sleep(seconds)
        return [np.zeros(1)]

    return run


def test_short_runs_go_inline_once_one_was_timed() -> None:
    site = _RunSite(inline_allowed=True)
    assert not site.inline  # nothing timed yet: the first run goes to the inference thread
    site.timed(_sleeping(0.001), {}, [])
    assert site.inline
    site.offloaded = 1  # a run on the inference thread: the next one queues behind it
    assert not site.inline


def test_long_runs_stay_on_the_inference_thread() -> None:
    site = _RunSite(inline_allowed=True)
    site.timed(_sleeping(INLINE_RUN_SECONDS * 1.5), {}, [])
    assert not site.inline
    for _ in range(20):  # the average follows the runs down again
        site.timed(_sleeping(0.0), {}, [])
    assert site.inline


def test_a_request_timeout_keeps_every_run_off_the_loop() -> None:
    site = _RunSite(inline_allowed=False)
    site.timed(_sleeping(0.0), {}, [])
    assert not site.inline
