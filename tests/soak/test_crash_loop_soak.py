"""``kill -9`` of a live API at random moments, round after round, while optimizations and local
deployments are being created, changed and hibernated: after each restart every job ends with a
reason, every active deployment runs exactly its one server, nothing of the killed processes
survives, no record is lost."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import build_onnx_model
from tests.api.test_deployments_local import local_body
from tests.hardening.live import LiveApi, upload_model
from tests.hardening.test_crash_recovery import BUSY, serving_processes, wait_until

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1200)]

ROUNDS = 8


def optimizations_done(
    api: LiveApi, headers: dict[str, str], model_id: str
) -> list[dict[str, Any]] | None:
    url = f"{api.url}/models/{model_id}/optimized"
    rows: list[dict[str, Any]] = httpx.get(url, headers=headers).json()
    return rows if all(row["status"] != "optimizing" for row in rows) else None


def all_settled(api: LiveApi, headers: dict[str, str]) -> list[dict[str, Any]] | None:
    url = f"{api.url}/deployments?limit=1000"
    listed: list[dict[str, Any]] = httpx.get(url, headers=headers).json()
    return listed if all(d["status"] not in BUSY for d in listed) else None


def test_repeated_kills_lose_nothing(tmp_path: Path) -> None:
    rng = random.Random(8)
    api = LiveApi(tmp_path / "data")
    api.data_dir.mkdir()
    api.start()
    deployments: list[str] = []
    try:
        headers = api.headers()
        model_id = upload_model(api, headers, build_onnx_model(tmp_path / "tiny.onnx"))
        optimizations = 0
        for round_number in range(ROUNDS):
            optimizing = httpx.post(
                f"{api.url}/models/{model_id}/optimize",
                json={"method": rng.choice(["graph", "quantization", "auto"])},
                headers=headers,
            )
            assert optimizing.status_code == 202, optimizing.text
            optimizations += 1
            body = local_body(model_id, name=f"crash-{round_number}")
            created = httpx.post(f"{api.url}/deployments", json=body, headers=headers)
            assert created.status_code == 202, created.text
            deployments.append(created.json()["id"])
            if len(deployments) > 1:  # change an earlier one too, while it may still settle
                earlier = rng.choice(deployments[:-1])
                httpx.post(f"{api.url}/deployments/{earlier}/hibernate", headers=headers)
            time.sleep(rng.uniform(0.0, 2.0))

            api.kill()
            api.start()
            headers = api.headers()

            rows = wait_until(
                partial(optimizations_done, api, headers, model_id),
                f"round {round_number}: optimizations end",
            )
            assert len(rows) == optimizations, "every optimization is still recorded"
            for row in rows:
                assert row["status"] == "completed" or row["status_reason"], row

            listed = wait_until(
                partial(all_settled, api, headers), f"round {round_number}: deployments settle"
            )
            assert sorted(d["id"] for d in listed) == sorted(deployments), "no record lost"
            for deployment in listed:
                running = serving_processes(deployment["id"])
                if deployment["status"] == "active":
                    assert len(running) == 1, deployment
                else:
                    # Only a job interrupted by kill after kill may give up; a restore never
                    # fails (a killed API's servers are stopped before their ports are reused).
                    assert deployment["status"] == "hibernated" or (
                        "interrupted" in deployment["status_reason"]
                    ), deployment
                    assert running == [], deployment
        print(
            f"\ncrash loop: {ROUNDS} kills, {optimizations} optimizations, "
            f"{len(deployments)} deployments, nothing lost"
        )
    finally:
        api.stop()
        for pid in (pid for deployment in deployments for pid in serving_processes(deployment)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
