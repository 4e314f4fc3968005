"""``make demo`` end to end: the whole first session over HTTP against the embedded API."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from rich.console import Console

from api import demo


@pytest.mark.slow  # 15-40 s: it trains, optimizes (four candidates), serves, analyses
def test_the_demo_walks_the_first_session_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its data directory goes
    monkeypatch.setattr(demo, "console", Console(width=300, color_system=None))  # no wrapping
    demo.run_demo()
    shown = capsys.readouterr().out
    for step in range(9):
        assert f"{step}. " in shown, f"step {step} missing:\n{shown}"
    assert "is active at http://127.0.0.1:" in shown
    assert "same endpoint: True" in shown
    assert "performance: " in shown
    assert shown.rstrip().endswith("the demo is done")
    assert list(tmp_path.iterdir()) == []  # its data directory is gone
