"""Configuration: flags over ``AIDEPLOY_SERVE_*`` variables over defaults, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving.config import ConfigError, ModelSpec, available_cpus, load_config, parse_byte_size


def test_defaults_with_only_a_model() -> None:
    config = load_config({"model": ["/m/encoder.onnx"]}, environ={})
    assert config.models == (ModelSpec("encoder", "/m/encoder.onnx", "1"),)
    assert (config.host, config.port, config.max_batch_size) == ("127.0.0.1", 8080, 1)
    assert config.threads == available_cpus()
    assert config.max_body_bytes == 64 * 2**20
    assert config.model_dir == Path("~/.cache/aideploy/models").expanduser()
    assert config.spin_wait is True
    assert config.parallel_runs == 1
    assert load_config({"model": ["/m.onnx"], "spin_wait": "off"}, environ={}).spin_wait is False


def test_the_deployment_contract_variables() -> None:
    """The names ``aideploy_iac/runtime_contract.py`` sets on every target."""
    config = load_config(
        environ={
            "AIDEPLOY_SERVE_MODEL_URI": "s3://bucket/models/abc/",
            "AIDEPLOY_SERVE_MODEL_NAME": "sentiment",
            "AIDEPLOY_SERVE_MODEL_FORMAT": "onnx",
            "AIDEPLOY_SERVE_MODEL_DIR": "/models",
            "AIDEPLOY_SERVE_REQUEST_TIMEOUT": "30",
            "AIDEPLOY_SERVE_MAX_CONCURRENCY": "8",
            "AIDEPLOY_SERVE_THREADS": "2",
            "PORT": "8080",
            "AIDEPLOY_SERVE_HOST": "0.0.0.0",
        }
    )
    assert config.models == (ModelSpec("sentiment", "s3://bucket/models/abc/"),)
    assert (config.model_dir, config.request_timeout, config.max_concurrency) == (
        Path("/models"),
        30.0,
        8,
    )
    assert (config.host, config.port, config.threads) == ("0.0.0.0", 8080, 2)


def test_flags_win_over_variables_and_serve_port_over_port() -> None:
    environ = {"AIDEPLOY_SERVE_MODEL_URI": "/a.onnx", "PORT": "9000", "AIDEPLOY_SERVE_PORT": "9100"}
    assert load_config(environ=environ).port == 9100
    assert load_config({"port": "9200"}, environ=environ).port == 9200
    assert load_config(environ={"AIDEPLOY_SERVE_MODEL_URI": "/a.onnx", "PORT": "9000"}).port == 9000
    assert load_config({"model": ["/b.onnx"]}, environ=environ).models[0].source == "/b.onnx"


def test_several_models_named_or_by_stem() -> None:
    config = load_config(
        environ={"AIDEPLOY_SERVE_MODEL_URI": "clf=s3://b/c.onnx, /m/encoder/model.onnx,gs://x/y/"}
    )
    assert [(spec.name, spec.source) for spec in config.models] == [
        ("clf", "s3://b/c.onnx"),
        ("encoder", "/m/encoder/model.onnx"),
        ("y", "gs://x/y/"),
    ]


@pytest.mark.parametrize(
    ("options", "environ", "message"),
    [
        ({}, {}, "no model given: pass MODEL or set AIDEPLOY_SERVE_MODEL_URI"),
        ({"model": ["/a.onnx", "/b/a.onnx"]}, {}, "model name 'a' is used twice"),
        ({"model": ["/a.onnx", "/b.onnx"], "name": "x"}, {}, "only for a single model"),
        ({"model": ["/m.onnx"], "name": "bad name"}, {}, "model name 'bad name': expected letters"),
        (
            {"model": ["/m.onnx"]},
            {"AIDEPLOY_SERVE_PORT": "70000"},
            "AIDEPLOY_SERVE_PORT: expected 0..65535, got 70000",
        ),
        ({"model": ["/m.onnx"]}, {"PORT": "http"}, "PORT: expected a whole number, got 'http'"),
        ({"model": ["/m.onnx"], "threads": "0"}, {}, "--threads: expected 1..1024, got 0"),
        (
            {"model": ["/m.onnx"]},
            {"AIDEPLOY_SERVE_MAX_BATCH_DELAY_MS": "soon"},
            "AIDEPLOY_SERVE_MAX_BATCH_DELAY_MS: expected a number",
        ),
        (
            {"model": ["/m.onnx"]},
            {"AIDEPLOY_SERVE_MODEL_FORMAT": "pytorch"},
            "the server runs ONNX models, got 'pytorch'",
        ),
        (
            {"model": ["/m.onnx"], "max_body_bytes": "12"},
            {},
            "--max-body-bytes: expected at least 1KiB",
        ),
        ({"model": ["/m.onnx"], "host": " "}, {}, "--host: must not be empty"),
        (
            {"model": ["/m.onnx"]},
            {"AIDEPLOY_SERVE_SPIN_WAIT": "maybe"},
            "AIDEPLOY_SERVE_SPIN_WAIT: expected true or false",
        ),
        (
            {"model": ["/m.onnx"], "threads": "2", "parallel_runs": "3"},
            {},
            "--parallel-runs: expected at most the 2 thread(s) the runs share, got 3",
        ),
        (
            {"model": ["/m.onnx"]},
            {"AIDEPLOY_SERVE_PARALLEL_RUNS": "0"},
            "AIDEPLOY_SERVE_PARALLEL_RUNS: expected 1..1024, got 0",
        ),
    ],
)
def test_bad_values_name_the_flag_or_variable(
    options: dict[str, object], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(options, environ=environ)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2048", 2048),
        ("64MiB", 64 * 2**20),
        ("10MB", 10_000_000),
        ("1.5G", 1_500_000_000),
        ("4ki", 4096),
        ("2 KB", 2000),
    ],
)
def test_byte_sizes(text: str, size: int) -> None:
    assert parse_byte_size(text, "--max-body-bytes") == size


def test_health_check_needs_no_model() -> None:
    assert load_config(environ={"PORT": "8123"}, require_model=False).port == 8123


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "all"),
        ({"cpu.max": "max 100000\n"}, "all"),
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "all"),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
    ],
)
def test_threads_follow_the_cgroup_cpu_limit(
    tmp_path: Path, files: dict[str, str], expected: int | str
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    every = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == (every if expected == "all" else expected)


def test_parallel_runs_from_flag_or_variable() -> None:
    flagged = load_config({"model": ["/m.onnx"], "threads": "4", "parallel_runs": "2"}, environ={})
    assert (flagged.threads, flagged.parallel_runs) == (4, 2)
    from_environment = load_config(
        environ={
            "AIDEPLOY_SERVE_MODEL_URI": "/m.onnx",
            "AIDEPLOY_SERVE_THREADS": "2",
            "AIDEPLOY_SERVE_PARALLEL_RUNS": "2",
        }
    )
    assert from_environment.parallel_runs == 2
