"""The optimizer benchmark's bar checks: what counts as met, missed or skipped."""

from __future__ import annotations

from typing import Any

from benchmarks.optimizer import Bar, Row, check_bars


def _row(**changes: Any) -> Row:
    values: dict[str, Any] = {
        "model": "minilm",
        "method": "auto",
        "chosen": "int8",
        "precision": "int8",
        "size_mb": 23.0,
        "size_change_pct": -75.0,
        "latency_ms": {1: 5.0, 8: 30.0, 256: 900.0},
        "latency_change_pct": {1: -40.0, 8: -38.0, 256: -45.0},
        "accuracy_change": -0.2,
        "accuracy_unit": "pp",
        "metric": "cosine_similarity",
        "cosine": 0.994,
        "token_cosine": 0.991,
        "seconds": 1.0,
    }
    values.update(changes)
    return Row(**values)


def _status(bars: list[Bar], name: str) -> str:
    return next(bar.status for bar in bars if bar.name == name)


def test_the_int8_bar_needs_auto_to_have_picked_int8() -> None:
    bar = "MiniLM int8 via auto, no floor"
    assert _status(check_bars({"minilm auto": _row()}, {}), bar) == "met"
    int4 = _row(chosen="int4", precision="int4", size_change_pct=-86.0)
    assert _status(check_bars({"minilm auto": int4}, {}), bar) == "MISSED"
    slow_at_8 = _row(latency_change_pct={1: -40.0, 8: -20.0})
    assert _status(check_bars({"minilm auto": slow_at_8}, {}), bar) == "MISSED"
    measured = next(b.measured for b in check_bars({"minilm auto": _row()}, {}) if b.name == bar)
    assert "token cosine 0.9910" in measured


def test_missing_rows_are_named_as_skipped_with_the_reason() -> None:
    bars = check_bars({}, {"minilm auto": "not installed", "minilm auto floor": "not installed"})
    assert _status(bars, "MiniLM int8 via auto, no floor") == "skipped: not installed"
    assert _status(bars, "MiniLM via auto, floor cosine >= 0.995") == "skipped: not installed"
    assert _status(bars, "digits CNN via auto") == "skipped: not run"


def test_the_cnn_bar_needs_speed_at_batch_256_and_no_slowdown_at_1() -> None:
    bar = "digits CNN via auto"
    cnn = _row(model="digits cnn", chosen="int8-static", precision="int8-static", cosine=1.0)
    assert _status(check_bars({"digits cnn auto": cnn}, {}), bar) == "met"
    slower = _row(latency_change_pct={1: 3.0, 8: -30.0, 256: -40.0})
    assert _status(check_bars({"digits cnn auto": slower}, {}), bar) == "MISSED"
    lossy = _row(accuracy_change=-0.6)
    assert _status(check_bars({"digits cnn auto": lossy}, {}), bar) == "MISSED"


def test_int4_is_checked_on_minilm_when_present_else_on_the_encoder() -> None:
    encoder = _row(model="random encoder", size_change_pct=-86.0)
    bars = check_bars({"encoder int4": encoder}, {})
    assert _status(bars, "transformer int4") == "met"
    minilm = _row(size_change_pct=-80.0)
    bars = check_bars({"encoder int4": encoder, "minilm int4": minilm}, {})
    assert _status(bars, "transformer int4") == "MISSED"
