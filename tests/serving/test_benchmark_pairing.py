"""The serving benchmark's paired figures: each window against the raw windows around it."""

from __future__ import annotations

import pytest

from benchmarks.serving import Latency, Paired


def _window(throughput: float, p50_ms: float = 10.0) -> Latency:
    return Latency(p50_ms=p50_ms, p99_ms=2 * p50_ms, throughput=throughput, requests=100)


def test_each_window_is_compared_with_the_raw_windows_around_it() -> None:
    """The machine halves its speed between rounds: ratios of medians would mislead, pairs
    do not."""
    paired = Paired.of(
        [
            (_window(100, 10.0), _window(95, 10.3), _window(100, 10.0)),
            (_window(50, 20.0), _window(47.5, 20.6), _window(50, 20.0)),
            (_window(100, 10.0), _window(96, 10.2), _window(100, 10.0)),
        ]
    )
    assert paired.throughput_ratio == pytest.approx(0.95)
    assert paired.p50_delta_ms == pytest.approx(0.3)
    assert (paired.kept, paired.windows) == (3, 3)


def test_windows_whose_raw_brackets_disagree_are_left_out() -> None:
    paired = Paired.of(
        [
            (_window(100), _window(95), _window(100)),
            (_window(100), _window(120), _window(60)),  # the machine changed speed meanwhile
            (_window(100), _window(93), _window(98)),
        ]
    )
    assert (paired.kept, paired.windows) == (2, 3)
    assert paired.throughput_ratio == pytest.approx((0.95 + 93 / 99) / 2)


def test_with_no_steady_window_all_of_them_count() -> None:
    paired = Paired.of([(_window(100), _window(80), _window(50))])
    assert (paired.kept, paired.windows) == (0, 1)
    assert paired.throughput_ratio == pytest.approx(80 / 75)
