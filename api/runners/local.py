"""The embedded default: each deployment is the serving runtime (``python -m serving``) as a
supervised child process on a localhost port.

- The port is chosen once and kept in the deployment's runtime record, so hibernate/activate
  and API restarts bring the deployment back on the same endpoint.
- A process that dies unexpectedly is restarted (with a limit, then left stopped and logged).
- With ``hibernation_enabled`` the supervisor reads the server's Prometheus counters; after
  ``hibernation_idle_timeout`` seconds without an inference request it stops the process and
  tells the API, which records the deployment as hibernated.
- Each instance gets ``resource_requirements.cpu`` intra-op threads, and as many instances run
  as ``scaling_policy.max_instances`` asks and this host's CPUs fit. One instance listens on the
  endpoint itself; several listen on private ports behind a small round-robin TCP proxy on the
  endpoint (per connection, like a Kubernetes Service), run by this runner.
- Servers die with the API (a parent-death signal), and each carries a marker in its environment
  naming this data directory and its deployment: servers an earlier API process left behind
  (killed before its signal could be delivered, say) are found by that marker and stopped at
  start-up, before any deployment is restored on their ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio.to_thread

from aideploy.errors import AideployError
from aideploy.settings import Settings, child_process_environment
from api.runners.base import (
    ApplyOutcome,
    CrashCallback,
    DeploymentPlan,
    EventSink,
    IdleCallback,
    RunnerEvent,
)

log = logging.getLogger("aideploy.api.local")

_HOST = "127.0.0.1"
_READY_TIMEOUT_SECONDS = 120.0
_SUPERVISE_EVERY_SECONDS = 1.0
_METRICS_EVERY_SECONDS = 5.0
_MAX_RESTARTS = 3
_STOP_GRACE_SECONDS = 10.0


class LocalDeploymentError(AideployError):
    """The serving process could not start or become ready; the message has its last log line."""


@dataclass
class _Served:
    deployment_id: str
    name: str
    port: int
    """The endpoint's port."""
    commands: list[list[str]]
    """One server command per instance."""
    backend_ports: list[int]
    """Where the instances listen: ``[port]`` for one, private ports behind the proxy for more."""
    environment: dict[str, str]
    log_path: Path
    idle_timeout: float | None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    """Empty while stopped on purpose (hibernated)."""
    proxy: asyncio.Server | None = None
    restarts: int = 0
    last_requests: float = -1.0
    last_traffic: float = field(default_factory=time.monotonic)
    last_metrics_check: float = 0.0

    @property
    def running(self) -> bool:
        return bool(self.processes) and all(p.poll() is None for p in self.processes)


_SERVER_MARKER = "AIDEPLOY_LOCAL_SERVER"
"""Environment variable every server of this runner carries: ``<data dir>#<deployment id>``."""
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent(api_pid: int) -> None:
    """Runs in the forked child before exec: SIGTERM it (a graceful drain) when the API dies,
    or at once if the API died while it was being forked."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != api_pid:
            os._exit(1)


@dataclass(frozen=True)
class _Leftover:
    pid: int
    marker: str


def _servers_marked(prefix: str) -> list[_Leftover]:
    """Live processes whose environment holds a server marker starting with ``prefix``."""
    needle = f"{_SERVER_MARKER}={prefix}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or another user's
        for variable in environment.split(b"\0"):
            if variable.startswith(needle) and not _exited(int(entry.name)):
                marker = variable.split(b"=", 1)[1].decode(errors="replace")
                found.append(_Leftover(int(entry.name), marker))
    return found


def _exited(pid: int) -> bool:
    """Every thread of ``pid`` has exited. A killed orphan's main thread turns zombie while
    its other threads may still be tearing down, holding its sockets: wait for all of them."""
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True
    for thread in threads:
        try:
            state = (thread / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            return False
    return True


def _stop_leftovers(prefix: str) -> list[_Leftover]:
    """SIGKILL the marked servers (each leads its own process group) and wait until they are
    gone, so that their ports are free; an error if one does not go within the grace period."""
    leftovers = _servers_marked(prefix)
    for leftover in leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leftover.pid, signal.SIGKILL)
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for leftover in leftovers:
        while not _exited(leftover.pid):
            if time.monotonic() > deadline:
                raise LocalDeploymentError(
                    f"server {leftover.pid} left by an earlier API process did not stop"
                )
            time.sleep(0.02)
        log.warning("stopped server %s left running by an earlier API process", leftover.pid)
    return leftovers


def _listener_of(port: int) -> str:
    """Who listens on 127.0.0.1:``port`` (pid and command), as far as /proc tells this user."""
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
            if links & inodes:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                return f"pid {entry.name}: {command.strip()}"
        except OSError:
            continue
    return "a process this user cannot see"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction of a proxied connection until EOF, then pass the EOF on."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


class _RoundRobinProxy:
    """Spreads connections over the instances' ports, skipping one that refuses."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = ports
        self._next = 0

    async def handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        for _ in self._ports:
            port = self._ports[self._next % len(self._ports)]
            self._next += 1
            try:
                backend_reader, backend_writer = await asyncio.open_connection(_HOST, port)
            except OSError:
                continue
            for writer in (client_writer, backend_writer):
                connection = writer.get_extra_info("socket")
                if connection is not None:
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await asyncio.gather(
                    _pipe(client_reader, backend_writer), _pipe(backend_reader, client_writer)
                )
            finally:
                backend_writer.close()
                client_writer.close()
            return
        client_writer.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        return int(probe.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """Whether the server could listen there (it uses SO_REUSEADDR, so TIME_WAIT is fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((_HOST, port))
        except OSError:
            return False
    return True


def _wait_for_port(port: int) -> None:
    """Wait (briefly) until ``port`` is free: a server just stopped may still be closing it."""
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    while not _port_is_free(port):
        if time.monotonic() > deadline:
            raise LocalDeploymentError(
                f"port {port} of this deployment's endpoint is taken by another program "
                f"({_listener_of(port)})"
            )
        time.sleep(0.05)


def _threads_for(cpu_cores: float) -> int:
    return max(1, min(os.cpu_count() or 1, math.ceil(cpu_cores)))


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - localhost
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


def _inference_requests(metrics_text: str) -> float:
    """The sum of ``aideploy_inference_requests_total`` over the server's models."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("aideploy_inference_requests_total"):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _last_log_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


ChildEnvironment = Callable[[str], Mapping[str, str]]
"""Extra environment variables for a deployment's server, by deployment id (the usage
reporting settings: ``api.analytics.tokens.usage_environment``, wired in ``create_app``)."""


class LocalRunner:
    def __init__(
        self, settings: Settings, child_environment: ChildEnvironment | None = None
    ) -> None:
        self._child_environment = child_environment
        self._logs = settings.data_dir / "logs" / "deployments"
        self._marker_prefix = f"{settings.data_dir.resolve()}#"
        self._served: dict[str, _Served] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._on_idle: IdleCallback | None = None
        self._on_crash: CrashCallback | None = None

    def check_available(self) -> None:
        """Always available: the serving runtime is part of this installation."""

    async def start(self, on_idle: IdleCallback, on_crash: CrashCallback | None = None) -> None:
        """Stop what an earlier API process on this data directory left running (their ports
        are the endpoints restored next), then supervise."""
        await anyio.to_thread.run_sync(_stop_leftovers, self._marker_prefix)
        self._on_idle = on_idle
        self._on_crash = on_crash
        self._supervisor = asyncio.create_task(self._supervise(), name="local-supervisor")

    def _lock(self, deployment_id: str) -> asyncio.Lock:
        return self._locks.setdefault(deployment_id, asyncio.Lock())

    async def apply(self, plan: DeploymentPlan, on_event: EventSink) -> ApplyOutcome:
        deployment = plan.deployment
        async with self._lock(deployment.id):
            port = int(plan.runtime.get("port") or 0) or free_port()
            endpoint = f"http://{_HOST}:{port}"
            if plan.hibernated:
                current = self._served.get(deployment.id)
                if current is not None:
                    await self._stop(current, on_event)
                on_event(RunnerEvent("hibernated", "servers stopped", {"port": port}))
                return ApplyOutcome(endpoint=endpoint, runtime={"port": port})
            model = self._servable_model(plan)
            threads = _threads_for(float(deployment.resource_requirements.cpu_cores))
            wanted = deployment.scaling_policy.max_instances
            instances = max(1, min(wanted, (os.cpu_count() or 1) // threads))
            if instances < wanted:
                on_event(
                    RunnerEvent(
                        "warning",
                        f"max_instances {wanted}: this host's {os.cpu_count()} CPUs fit "
                        f"{instances} instance(s) of cpu {deployment.resource_requirements.cpu}",
                    )
                )
            current = self._served.get(deployment.id)
            backend_ports = (
                [port]
                if instances == 1
                else (
                    current.backend_ports
                    if current is not None and len(current.backend_ports) == instances > 1
                    else [free_port() for _ in range(instances)]
                )
            )
            commands = [
                [
                    sys.executable, "-m", "serving", str(model),
                    "--name", deployment.name,
                    "--host", _HOST,
                    "--port", str(backend_port),
                    "--threads", str(threads),
                ]
                for backend_port in backend_ports
            ]  # fmt: skip
            policy = deployment.cost_optimization_policy
            extra = dict(self._child_environment(deployment.id)) if self._child_environment else {}
            extra[_SERVER_MARKER] = f"{self._marker_prefix}{deployment.id}"
            served = _Served(
                deployment_id=deployment.id,
                environment=child_process_environment(extra),
                name=deployment.name,
                port=port,
                commands=commands,
                backend_ports=backend_ports,
                log_path=self._logs / f"{deployment.id}.log",
                idle_timeout=float(policy.hibernation_idle_timeout)
                if policy.hibernation_enabled
                else None,
            )
            if current is not None:
                if current.commands == commands and current.running:
                    current.idle_timeout = served.idle_timeout
                    on_event(RunnerEvent("unchanged", "servers already up to date"))
                    return ApplyOutcome(endpoint=endpoint, runtime={"port": port})
                await self._stop(current, on_event)
            await anyio.to_thread.run_sync(_wait_for_port, port)
            await self._launch(served, on_event)
            self._served[deployment.id] = served
            return ApplyOutcome(endpoint=endpoint, runtime={"port": port})

    async def destroy(self, plan: DeploymentPlan, on_event: EventSink) -> None:
        async with self._lock(plan.deployment.id):
            served = self._served.pop(plan.deployment.id, None)
            if served is not None:
                await self._stop(served, on_event)
                served.log_path.unlink(missing_ok=True)
            on_event(RunnerEvent("destroyed", "local deployment removed"))
        self._locks.pop(plan.deployment.id, None)

    async def status(self, plan: DeploymentPlan) -> str:
        served = self._served.get(plan.deployment.id)
        if served is None:
            return "absent"
        return "running" if served.running else "stopped"

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        for served in list(self._served.values()):
            await self._stop(served, lambda _event: None)
        self._served.clear()

    @staticmethod
    def _servable_model(plan: DeploymentPlan) -> Path:
        """The ONNX file the serving runtime loads: every artifact a deployment serves is ONNX
        (a PyTorch upload was converted at upload, in a confined child), so nothing of the
        model is loaded in this process."""
        path = plan.artifact_path
        if path is None:
            raise LocalDeploymentError(f"the model artifact {plan.artifact_uri!r} is not available")
        return path

    async def _launch(self, served: _Served, on_event: EventSink) -> None:
        """Start every instance, wait until each is ready, then open the proxy if there are
        several; on failure nothing is left running."""
        served.log_path.parent.mkdir(parents=True, exist_ok=True)
        on_event(
            RunnerEvent(
                "starting",
                f"starting {len(served.commands)} server(s) for port {served.port}",
                {"port": served.port, "instances": len(served.commands)},
            )
        )
        with served.log_path.open("ab") as log_file:
            served.processes = [
                subprocess.Popen(  # noqa: S603 - our own interpreter and module
                    command,
                    stdin=subprocess.DEVNULL,
                    env=served.environment,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=partial(_die_with_parent, os.getpid()),  # no imports, no locks
                )
                for command in served.commands
            ]
        served.last_traffic = time.monotonic()
        served.last_requests = -1.0
        try:
            for process, backend_port in zip(served.processes, served.backend_ports, strict=True):
                await self._wait_ready(served, process, backend_port)
            if len(served.backend_ports) > 1:
                proxy = _RoundRobinProxy(served.backend_ports)
                served.proxy = await asyncio.start_server(
                    proxy.handle, _HOST, served.port, reuse_address=True
                )
        except BaseException:
            self._terminate(served)
            raise
        on_event(
            RunnerEvent(
                "ready",
                f"serving at http://{_HOST}:{served.port}",
                {"pids": [process.pid for process in served.processes], "port": served.port},
            )
        )

    async def _wait_ready(
        self, served: _Served, process: subprocess.Popen[bytes], port: int
    ) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
        url = f"http://{_HOST}:{port}/v2/health/ready"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LocalDeploymentError(
                    f"the server exited with code {process.returncode}: "
                    f"{_last_log_line(served.log_path)}"
                )
            status, _ = await anyio.to_thread.run_sync(_http_get, url, 1.0)
            if status == 200:
                return
            await asyncio.sleep(0.1)
        raise LocalDeploymentError(
            f"the server was not ready within {_READY_TIMEOUT_SECONDS:.0f} s: "
            f"{_last_log_line(served.log_path)}"
        )

    async def _stop(self, served: _Served, on_event: EventSink) -> None:
        """Close the proxy, then SIGTERM every instance (they drain in-flight requests)."""
        proxy, served.proxy = served.proxy, None
        if proxy is not None:
            proxy.close()
        processes, served.processes = served.processes, []
        alive = [process for process in processes if process.poll() is None]
        for process in alive:
            process.send_signal(signal.SIGTERM)
        for process in alive:
            try:
                await anyio.to_thread.run_sync(process.wait, _STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                await anyio.to_thread.run_sync(process.wait)
        if alive:
            on_event(
                RunnerEvent(
                    "stopped",
                    f"{len(alive)} server(s) stopped",
                    {"exit_codes": [process.returncode for process in alive]},
                )
            )

    def _terminate(self, served: _Served) -> None:
        if served.proxy is not None:
            served.proxy.close()
            served.proxy = None
        for process in served.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        served.processes = []

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(_SUPERVISE_EVERY_SECONDS)
            for served in list(self._served.values()):
                try:
                    await self._check(served)
                except Exception:
                    log.exception("supervising deployment %s failed", served.deployment_id)

    async def _check(self, served: _Served) -> None:
        lock = self._lock(served.deployment_id)
        if lock.locked():
            return  # an operation is changing it right now
        async with lock:
            if not served.processes:
                return  # stopped on purpose (hibernated)
            exited = [
                process.returncode for process in served.processes if process.poll() is not None
            ]
            if exited:
                await self._restart(served, exited[0])
                return
            if served.idle_timeout is not None:
                await self._check_idle(served)

    async def _restart(self, served: _Served, exit_code: int | None) -> None:
        """An instance died: restart the deployment's servers (a few times, then leave it)."""
        await self._stop(served, lambda _event: None)
        if served.restarts >= _MAX_RESTARTS:
            message = (
                f"the server exited ({exit_code}) {served.restarts + 1} times; left stopped: "
                f"{_last_log_line(served.log_path)}"
            )
            log.error("deployment %s: %s", served.deployment_id, message)
            await self._report_crash(served, message, running=False)
            return
        served.restarts += 1
        message = (
            f"the server exited with {exit_code}; restarted ({served.restarts}/{_MAX_RESTARTS})"
        )
        log.warning("deployment %s: %s", served.deployment_id, message)
        try:
            await self._launch(served, lambda _event: None)
        except Exception as exc:
            message = f"the server exited with {exit_code} and did not come back: {exc}"
            await self._report_crash(served, message, running=False)
            raise
        await self._report_crash(served, message, running=True)

    async def _report_crash(self, served: _Served, message: str, *, running: bool) -> None:
        if self._on_crash is not None:
            await self._on_crash(served.deployment_id, message, running)

    async def _check_idle(self, served: _Served) -> None:
        now = time.monotonic()
        if now - served.last_metrics_check < _METRICS_EVERY_SECONDS:
            return
        served.last_metrics_check = now
        requests = 0.0
        for backend_port in served.backend_ports:
            status, text = await anyio.to_thread.run_sync(
                _http_get, f"http://{_HOST}:{backend_port}/metrics", 2.0
            )
            requests += _inference_requests(text) if status == 200 else 0.0
        if requests != served.last_requests:
            served.last_requests = requests
            served.last_traffic = now
        assert served.idle_timeout is not None
        if now - served.last_traffic >= served.idle_timeout:
            log.info("deployment %s idle; hibernating", served.deployment_id)
            await self._stop(served, lambda _event: None)
            if self._on_idle is not None:
                await self._on_idle(served.deployment_id)
