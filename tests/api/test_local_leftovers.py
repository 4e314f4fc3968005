"""The local runner and servers it did not stop: a killed API's servers die with it, and
whatever an earlier runner on the same data directory left running is stopped at start-up so
that the deployment comes back on its own port (a killed multithreaded server keeps its port
for a few milliseconds after its main thread is gone: the runner waits for the port itself)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from aideploy.schema import ScalingPolicy
from aideploy.settings import Settings
from api.runners.base import DeploymentPlan, RunnerEvent
from api.runners.local import LocalRunner
from tests.api.test_runners import plan_for

ROUNDS = 4


@pytest.fixture
def database_url() -> None:
    """No API and no database here."""
    return


async def ignore(_deployment_id: str) -> None:
    return None


def one_instance(model: Path) -> DeploymentPlan:
    """One server on the endpoint itself (several would sit behind this process's own proxy)."""
    plan = plan_for(model)
    policy = ScalingPolicy(min_instances=0, max_instances=1)
    return replace(plan, deployment=plan.deployment.model_copy(update={"scaling_policy": policy}))


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
            return int(r.status) == 200
    except OSError:
        return False


def gone(pid: int, timeout: float) -> bool:
    """``pid`` has exited (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


async def test_a_new_runner_stops_leftovers_and_restores_on_the_same_port(
    settings: Settings, onnx_model: Path
) -> None:
    plan = one_instance(onnx_model)
    runners: list[LocalRunner] = []
    try:
        port = 0
        for round_number in range(ROUNDS):
            runner = LocalRunner(settings)
            await runner.start(ignore)  # stops the previous round's server, left running
            runners.append(runner)
            if round_number:
                previous = runners[-2]._served[plan.deployment.id].processes[0]
                assert gone(previous.pid, 0), "stopped before start() returned"
                plan.runtime["port"] = port
            events: list[RunnerEvent] = []
            outcome = await runner.apply(plan, events.append)
            assert [event.kind for event in events][-1] == "ready", events
            port = int(outcome.runtime["port"])
            assert outcome.endpoint == f"http://127.0.0.1:{port}"
            assert ready(port)
            assert runner._supervisor is not None
            runner._supervisor.cancel()  # this runner's API "dies": nothing restarts its server
    finally:
        for runner in runners:
            await runner.close()


def test_servers_die_with_their_api(tmp_path: Path, onnx_model: Path) -> None:
    """A runner's process killed with SIGKILL (no clean-up of its own) takes its servers along."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from aideploy.settings import Settings
        from api.runners.local import LocalRunner
        from tests.api.test_local_leftovers import one_instance
        from pathlib import Path

        async def main() -> None:
            runner = LocalRunner(Settings(data_dir=Path({str(tmp_path / "data")!r})))
            async def ignore(_: str) -> None: ...
            await runner.start(ignore)
            plan = one_instance(Path({str(onnx_model)!r}))
            await runner.apply(plan, lambda _event: None)
            served = runner._served[plan.deployment.id]
            print(served.processes[0].pid, served.port, flush=True)
            await asyncio.sleep(600)

        asyncio.run(main())
        """
    )
    api = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
        start_new_session=True,
    )
    try:
        assert api.stdout is not None
        line = api.stdout.readline().decode()
        assert line, "the runner process did not start its server"
        server_pid, port = (int(value) for value in line.split())
        assert ready(port)
        os.killpg(api.pid, signal.SIGKILL)  # the server leads its own session: not in this group
        api.wait(timeout=10)
        assert gone(server_pid, 30), "the server outlived its API"
    finally:
        if api.poll() is None:
            os.killpg(api.pid, signal.SIGKILL)
            api.wait()
