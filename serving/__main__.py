"""``python -m serving MODEL... [--option VALUE]...``: the lean entry point containers run.

Options are the ``AIDEPLOY_SERVE_*`` variables of :mod:`serving.config` as flags
(``--port 9000`` = ``AIDEPLOY_SERVE_PORT=9000``); a flag wins over its variable. The command line
is parsed by hand because ``argparse`` alone costs ~10 ms of the cold start.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import sys  # noqa: E402 - the start time is taken first on purpose

from serving.launch import prepare  # noqa: E402

prepare()

# onnxruntime and numpy next: they are most of the start-up imports, and nothing can overlap
# them (they hold the GIL); the small imports below then find their dependencies loaded.
import serving.model  # noqa: E402, F401
from aideploy.errors import AideployError  # noqa: E402
from serving.config import ConfigError, load_config  # noqa: E402

_IMPORTED = time.perf_counter()

OPTIONS = (
    "name",
    "model_version",
    "model_format",
    "model_dir",
    "host",
    "port",
    "threads",
    "parallel_runs",
    "max_batch_size",
    "max_batch_delay_ms",
    "max_concurrency",
    "request_timeout",
    "spin_wait",
    "max_body_bytes",
    "shutdown_grace_seconds",
    "keepalive_seconds",
    "log_level",
)
USAGE = (
    "usage: python -m serving MODEL [MODEL...] [--name NAME] [--host HOST] [--port PORT] "
    "[--threads N] [--parallel-runs N] [--max-batch-size N] [--max-batch-delay-ms MS] [--max-concurrency N] "
    "[--request-timeout S] [--spin-wait BOOL] [--max-body-bytes SIZE] [--model-dir DIR] "
    "[--model-version V] [--model-format onnx] [--shutdown-grace-seconds S] "
    "[--keepalive-seconds S] [--log-level LEVEL]\n\nMODEL is a .onnx file, a folder, an s3:// gs:// az:// file:// URI, or "
    "NAME=SOURCE. Each option can also come from its AIDEPLOY_SERVE_* variable (see "
    "serving/config.py; MODEL is AIDEPLOY_SERVE_MODEL_URI, the port also PORT)."
)


def parse_arguments(argv: list[str]) -> dict[str, object]:
    """``MODEL...`` and ``--option value`` / ``--option=value`` into :func:`load_config` options."""
    options: dict[str, object] = {}
    models: list[str] = []
    index = 0
    while index < len(argv):
        argument = argv[index]
        index += 1
        if not argument.startswith("--"):
            models.append(argument)
            continue
        flag, equals, value = argument[2:].partition("=")
        key = flag.replace("-", "_")
        if key not in OPTIONS:
            raise ConfigError(f"unknown option --{flag} (see --help)")
        if not equals:
            if index >= len(argv):
                raise ConfigError(f"--{flag} needs a value")
            value = argv[index]
            index += 1
        options[key] = value
    if models:
        options["model"] = models
    return options


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if any(argument in ("-h", "--help") for argument in arguments):
        print(USAGE)
        return 0
    try:
        config = load_config(parse_arguments(arguments))
    except AideployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from serving.launch import run

    return run(config, started=_STARTED, imported=_IMPORTED)


if __name__ == "__main__":
    sys.exit(main())
