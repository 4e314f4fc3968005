"""A real ``aideploy api`` process on a free 127.0.0.1 port with its own data directory: started,
killed with SIGKILL and restarted by the hardening and soak tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aideploy.settings import ENV_PREFIX

ADMIN = ("admin", "admin-password-hardening")
START_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveApi:
    """One API server process; ``start()`` again after ``kill()`` reuses its data and port."""

    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "api.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
        env.update(
            {
                f"{ENV_PREFIX}DATA_DIR": str(self.data_dir),
                f"{ENV_PREFIX}ADMIN_USERNAME": ADMIN[0],
                f"{ENV_PREFIX}ADMIN_PASSWORD": ADMIN[1],
                **self.extra_env,
            }
        )
        return env

    def start(self) -> None:
        """Start the server and wait until ``/health`` answers."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("aideploy")), "api", "--port", str(self.port)],
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API exited at start-up:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the API did not answer within {START_TIMEOUT_SECONDS} s:\n{self.log()}"
        )

    def kill(self) -> None:
        """SIGKILL the server and everything it started (no clean-up runs)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """A graceful stop (SIGTERM to the server), then SIGKILL after 20 s."""
        if self.process is None:
            return
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def token(self, username: str = ADMIN[0], password: str = ADMIN[1]) -> str:
        response = httpx.post(
            f"{self.url}/auth/token", json={"username": username, "password": password}
        )
        response.raise_for_status()
        return str(response.json()["token"])

    def headers(self, username: str = ADMIN[0], password: str = ADMIN[1]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username, password)}"}


def upload_model(api: LiveApi, headers: dict[str, str], path: Path, name: str = "tiny") -> str:
    """Upload an ONNX file through the API; its model id."""
    with path.open("rb") as file:
        response = httpx.post(
            f"{api.url}/models",
            headers=headers,
            data={"name": name, "framework": "onnx", "version": "1.0"},
            files={"file": (path.name, file, "application/octet-stream")},
            timeout=60,
        )
    assert response.status_code == 201, response.text
    return str(response.json()["model_id"])
