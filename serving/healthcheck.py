"""``python -m serving.healthcheck``: exit 0 if the server in this container is ready, else 1.

The container image's ``HEALTHCHECK`` runs it (slim images have no curl). It connects where the
server listens, as the same ``AIDEPLOY_SERVE_*``/``PORT`` settings say, and asks
``/v2/health/ready``.
"""

from __future__ import annotations

import http.client
import sys

from aideploy.errors import AideployError
from serving.config import load_config

__all__ = ["main"]

_ANY_ADDRESS = {"0.0.0.0", "::", ""}  # noqa: S104 - names the wildcard, binds nothing


def main(timeout: float = 3.0) -> int:
    try:
        config = load_config(require_model=False)
    except AideployError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    host = "127.0.0.1" if config.host in _ANY_ADDRESS else config.host
    connection = http.client.HTTPConnection(host, config.port, timeout=timeout)
    try:
        connection.request("GET", "/v2/health/ready")
        status = connection.getresponse().status
    except OSError as exc:
        print(f"unhealthy: {host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if status != 200:
        print(f"unhealthy: /v2/health/ready answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
