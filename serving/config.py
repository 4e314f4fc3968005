"""The server's configuration: command-line values over ``AIDEPLOY_SERVE_*`` variables over defaults.

This module is the documented exception to "only ``aideploy/settings.py`` reads the
environment": the server's start-up path is its cold start, and importing pydantic-settings
alone costs about 0.13 s, some 40% of the whole onnxruntime start-up floor. So
:func:`load_config` reads the variables itself with the standard library, in one place, and
nothing else in ``serving/`` touches ``os.environ`` (:func:`single_threaded_blas` sets the one
variable the server gives numpy).

The variable names are the deployment contract of ``aideploy_iac/runtime_contract.py``: every
target configures the same image only through them. All are optional on the command line,
where a flag wins over its variable:

``AIDEPLOY_SERVE_MODEL_URI`` (the ``MODEL`` argument)
    What to serve: a file, a folder or an ``s3://``/``gs://``/``az://``/``file://`` URI. Several
    models are separated by commas, each optionally named ``name=source``.
``AIDEPLOY_SERVE_MODEL_NAME`` (``--name``)
    The model's name when exactly one model is served (default: the file or folder stem).
``AIDEPLOY_SERVE_MODEL_VERSION`` (``--model-version``)
    The version the model answers to under ``/versions/{version}`` (default ``1``).
``AIDEPLOY_SERVE_MODEL_FORMAT`` (``--model-format``)
    Must be ``onnx`` (the default): the server runs ONNX; ``aideploy optimize`` converts PyTorch.
``AIDEPLOY_SERVE_MODEL_DIR`` (``--model-dir``)
    Writable folder object-store models are downloaded into (default ``~/.cache/aideploy/models``).
``AIDEPLOY_SERVE_HOST`` (``--host``), ``AIDEPLOY_SERVE_PORT`` or ``PORT`` (``--port``)
    Where to listen (default ``127.0.0.1:8080``). ``PORT`` is what Cloud Run, Azure Container
    Apps and the AWS Lambda Web Adapter set; ``AIDEPLOY_SERVE_PORT`` wins over it.
``AIDEPLOY_SERVE_THREADS`` (``--threads``)
    onnxruntime intra-op threads (default: the CPUs this process may use, honouring a cgroup
    CPU limit, i.e. the deployment's ``cpu``).
``AIDEPLOY_SERVE_PARALLEL_RUNS`` (``--parallel-runs``)
    How many runs execute at once, each with ``threads / parallel-runs`` of the threads
    (default 1: one run at a time with all of them, the lowest latency). Under concurrent load
    more runs with fewer threads each use the cores better: measured on 2 cores with the
    benchmark's encoder (batch 1, concurrency 8), 2 runs of 1 thread served 1.3-1.5x (int8)
    and 1.1-1.2x (fp32) the requests per second of 1 run of 2 threads, while a lone request
    took 40-75% longer (see serving/README.md). Works with any model, unlike batching; at most
    ``threads``.
``AIDEPLOY_SERVE_MAX_BATCH_SIZE``, ``AIDEPLOY_SERVE_MAX_BATCH_DELAY_MS``
    Adaptive batching: merge up to this many rows of concurrent requests into one run, waiting
    at most this long for company (default 1 = off, 2 ms).
``AIDEPLOY_SERVE_MAX_CONCURRENCY`` (``--max-concurrency``)
    Inference requests admitted at once (running or queued); more get 503 with
    ``Retry-After`` so the platform's load balancer retries elsewhere (default 0 = no limit).
``AIDEPLOY_SERVE_REQUEST_TIMEOUT`` (``--request-timeout``)
    Seconds an inference may take before the client gets 504 (default 0 = no limit).
``AIDEPLOY_SERVE_SPIN_WAIT`` (``--spin-wait false``)
    Let onnxruntime's idle threads spin between the operators of a run (default true, as
    onnxruntime does); between runs they sleep either way, so an idle server burns no CPU quota.
    Measured in ``benchmarks/serving.py`` on 2 cores shared with the load generator, sleeping
    inside runs too cost 15-30% of latency and throughput at every concurrency; turn it off
    where other busy processes share the cores.
``AIDEPLOY_SERVE_MAX_BODY_BYTES`` (``--max-body-bytes``)
    Largest request body accepted, larger ones get 413 (default ``64MiB``; ``10MB`` notation).
``AIDEPLOY_SERVE_SHUTDOWN_GRACE_SECONDS``
    How long SIGTERM waits for in-flight requests (default 25, below Kubernetes' 30).
``AIDEPLOY_SERVE_KEEPALIVE_SECONDS``
    Idle keep-alive connections are closed after this long (default 75, above the idle timeout
    of common load balancers so they never reuse a connection the server just closed).
``AIDEPLOY_SERVE_LOG_LEVEL``
    ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR`` (default ``INFO``).
``AIDEPLOY_SERVE_USAGE_URL``, ``AIDEPLOY_SERVE_USAGE_TOKEN``, ``AIDEPLOY_SERVE_USAGE_INTERVAL``
    Where the server reports its per-minute usage (``POST .../deployments/{id}/usage``), with the
    deployment-scoped token the platform issued, every ``INTERVAL`` seconds (default 60); unset
    URL = no reporting (see :mod:`serving.usage`). Variables only: a token has no place on a
    command line.
``AZURE_STORAGE_ACCOUNT_NAME``, ``AZURE_STORAGE_ANON``
    adlfs's own names: the storage account of ``az://CONTAINER/PATH`` models, and ``true`` to
    read a public container anonymously (default: sign in with the workload or managed
    identity; ``AZURE_CLIENT_ID`` picks a user-assigned one). See ``storage_location`` in
    :mod:`serving.model`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aideploy.errors import InputError

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "ModelSpec",
    "ServeConfig",
    "load_config",
    "parse_models",
    "single_threaded_blas",
]

ENV_PREFIX = "AIDEPLOY_SERVE_"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Settings whose flag or variable is not simply --field-name / AIDEPLOY_SERVE_FIELD_NAME.
_SPELLINGS = {
    "model": ("MODEL", f"{ENV_PREFIX}MODEL_URI"),
    "name": ("--name", f"{ENV_PREFIX}MODEL_NAME"),
}


class ConfigError(InputError):
    """A command-line option or ``AIDEPLOY_SERVE_*`` variable with an unusable value."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model to serve: the name clients use, where it comes from, its version label."""

    name: str
    source: str
    version: str = "1"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything the server needs; built by :func:`load_config`."""

    models: tuple[ModelSpec, ...]
    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 1
    parallel_runs: int = 1
    max_batch_size: int = 1
    max_batch_delay_ms: float = 2.0
    max_concurrency: int = 0
    request_timeout: float = 0.0
    spin_wait: bool = True
    max_body_bytes: int = 64 * 2**20
    model_dir: Path = Path("~/.cache/aideploy/models")
    shutdown_grace_seconds: float = 25.0
    keepalive_seconds: float = 75.0
    log_level: str = "INFO"
    usage_url: str | None = None
    usage_token: str | None = None
    usage_interval: float = 60.0
    azure_storage_account: str | None = None
    azure_storage_anon: bool = False


def single_threaded_blas() -> None:
    """Keep numpy's OpenBLAS to the calling thread; call before numpy is first imported.

    The server never does linear algebra in numpy (onnxruntime does the math, on its own
    threads sized by ``--threads``), yet OpenBLAS starts a worker per core when numpy loads,
    which spins for ~0.1 s: on 2 cores it took one from building the session during the cold
    start (int8 encoder: session 81 -> 69 ms, first answer 190 -> 171 ms). An explicit
    ``OPENBLAS_NUM_THREADS`` is kept."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def load_config(
    options: Mapping[str, object | None] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_model: bool = True,
) -> ServeConfig:
    """Merge command-line ``options`` (``None`` = not given) over the environment and defaults.

    ``options`` keys are :class:`ServeConfig` field names plus ``model`` (a list of sources)
    and ``name``; every problem raises :class:`ConfigError` naming the option and variable.
    The health check reads only where to connect, so it passes ``require_model=False``.
    """
    given = {key: value for key, value in (options or {}).items() if value is not None}
    env = os.environ if environ is None else environ

    def raw(field: str) -> tuple[object | None, str]:
        """The value for ``field`` and how the user spelled it (for error messages)."""
        flag, variable = _SPELLINGS.get(
            field, (f"--{field.replace('_', '-')}", f"{ENV_PREFIX}{field.upper()}")
        )
        if field in given:
            return given[field], flag
        if field == "port" and variable not in env and "PORT" in env:
            return env["PORT"], "PORT"
        return env.get(variable), variable

    sources, _ = raw("model")
    if isinstance(sources, str):
        sources = [part for part in sources.split(",") if part.strip()]
    name, _ = raw("name")
    version, version_where = raw("model_version")
    models = (
        parse_models(
            [str(source) for source in sources] if isinstance(sources, list) else [],
            name=None if name is None else str(name),
            version="1" if version is None else _text(version, version_where),
        )
        if require_model or sources
        else ()
    )
    model_format, format_where = raw("model_format")
    if model_format is not None and str(model_format).strip().lower() != "onnx":
        raise ConfigError(
            f"{format_where}: the server runs ONNX models, got {model_format!r} "
            "(`aideploy optimize` converts PyTorch models to ONNX)"
        )

    def integer(field: str, default: int, low: int, high: int) -> int:
        value, spelled = raw(field)
        if value is None:
            return default
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{spelled}: expected a whole number, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"{spelled}: expected {low}..{high}, got {number}")
        return number

    def decimal(field: str, default: float, low: float, high: float) -> float:
        value, spelled = raw(field)
        if value is None:
            return default
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{spelled}: expected a number, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"{spelled}: expected {low:g}..{high:g}, got {number:g}")
        return number

    spin, spin_where = raw("spin_wait")
    body, body_where = raw("max_body_bytes")
    level, level_where = raw("log_level")
    host, host_where = raw("host")
    model_dir, _ = raw("model_dir")
    log_level = "INFO" if level is None else str(level).strip().upper()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"{level_where}: expected one of {', '.join(_LOG_LEVELS)}, got {level!r}")
    usage_url, url_where = raw("usage_url")
    usage_token, token_where = raw("usage_token")
    if usage_url and not str(usage_url).startswith(("http://", "https://")):
        raise ConfigError(f"{url_where}: expected an http:// or https:// URL, got {usage_url!r}")
    if usage_url and not usage_token:
        raise ConfigError(f"{token_where}: required with {url_where}")
    azure_anon = env.get("AZURE_STORAGE_ANON", "").strip()
    threads = integer("threads", available_cpus(), 1, 1024)
    parallel_runs = integer("parallel_runs", 1, 1, 1024)
    if parallel_runs > threads:
        raise ConfigError(
            f"{raw('parallel_runs')[1]}: expected at most the {threads} thread(s) the runs share, "
            f"got {parallel_runs}"
        )
    return ServeConfig(
        models=models,
        host="127.0.0.1" if host is None else _text(host, host_where),
        port=integer("port", 8080, 0, 65535),
        threads=threads,
        parallel_runs=parallel_runs,
        max_batch_size=integer("max_batch_size", 1, 1, 65536),
        max_batch_delay_ms=decimal("max_batch_delay_ms", 2.0, 0.0, 10_000.0),
        max_concurrency=integer("max_concurrency", 0, 0, 1_000_000),
        request_timeout=decimal("request_timeout", 0.0, 0.0, 86_400.0),
        spin_wait=True if spin is None else _flag(spin, spin_where),
        max_body_bytes=64 * 2**20 if body is None else parse_byte_size(str(body), body_where),
        model_dir=Path(str(model_dir) if model_dir else "~/.cache/aideploy/models").expanduser(),
        shutdown_grace_seconds=decimal("shutdown_grace_seconds", 25.0, 0.0, 3600.0),
        keepalive_seconds=decimal("keepalive_seconds", 75.0, 1.0, 86_400.0),
        log_level=log_level,
        usage_url=str(usage_url) if usage_url else None,
        usage_token=str(usage_token) if usage_url and usage_token else None,
        usage_interval=decimal("usage_interval", 60.0, 1.0, 3600.0),
        azure_storage_account=env.get("AZURE_STORAGE_ACCOUNT_NAME", "").strip() or None,
        azure_storage_anon=_flag(azure_anon, "AZURE_STORAGE_ANON") if azure_anon else False,
    )


def parse_models(sources: list[str], name: str | None, version: str) -> tuple[ModelSpec, ...]:
    """Turn ``MODEL`` arguments (``source`` or ``name=source``) into named, distinct specs."""
    if not sources:
        raise ConfigError(f"no model given: pass MODEL or set {ENV_PREFIX}MODEL_URI")
    if name is not None and len(sources) > 1:
        raise ConfigError(
            f"--name / {ENV_PREFIX}MODEL_NAME: only for a single model; use NAME=SOURCE"
        )
    specs: list[ModelSpec] = []
    for argument in sources:
        label, equals, rest = argument.strip().partition("=")
        if equals and _MODEL_NAME.match(label) and rest:
            model_name, source = label, rest
        else:
            source = argument.strip()
            model_name = name if name is not None else _default_name(source)
        if not _MODEL_NAME.match(model_name):
            raise ConfigError(
                f"model name {model_name!r}: expected letters, digits, '_', '.', '-' "
                "(at most 128, not starting with '.' or '-')"
            )
        if any(spec.name == model_name for spec in specs):
            raise ConfigError(f"model name {model_name!r} is used twice; name them NAME=SOURCE")
        specs.append(ModelSpec(name=model_name, source=source, version=version))
    return tuple(specs)


def parse_byte_size(text: str, where: str) -> int:
    """``"1048576"``, ``"64MiB"``, ``"10MB"``, ``"1.5G"`` as a number of bytes."""
    match = _SIZE.match(text)
    if match is None:
        raise ConfigError(f"{where}: expected a byte size such as 64MiB or 10MB, got {text!r}")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper().rstrip("B") or "B"
    base = 1024 if unit.endswith("I") else 1000
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
    size = int(number * base**power)
    if size < 1024:
        raise ConfigError(f"{where}: expected at least 1KiB, got {text!r}")
    return size


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota if one is set.

    Inside a container limited to ``cpu: 2`` on a 64-core node, ``os.cpu_count()`` says 64;
    running 64 onnxruntime threads there would be throttled to a crawl.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return cpus if quota is None else max(1, min(cpus, round(quota)))


def _cgroup_quota(cgroup: Path) -> float | None:
    """CPUs granted by cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``; None when unlimited."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else quota_us / period_us


def _default_name(source: str) -> str:
    """``/models/encoder.onnx`` and ``s3://bucket/encoder/`` are both served as ``encoder``."""
    tail = source.rstrip("/").rsplit("/", 1)[-1]
    stem = tail[:-5] if tail.endswith(".onnx") else tail
    return stem if stem and stem != "model" else _parent_name(source) or "model"


def _parent_name(source: str) -> str | None:
    """For ``.../encoder/model.onnx`` the folder says more than the file: ``encoder``."""
    parts = [part for part in source.split("://", 1)[-1].split("/") if part]
    return parts[-2] if len(parts) >= 2 and _MODEL_NAME.match(parts[-2]) else None


def _flag(value: object, where: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _text(value: object, where: str) -> str:
    text = str(value).strip()
    if not text:
        raise ConfigError(f"{where}: must not be empty")
    return text
