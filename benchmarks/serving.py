"""Serving benchmark: the server against onnxruntime itself, on a BERT-style text encoder.

Models: ``benchmarks/models.py``'s 6-layer x 384 encoder with mean pooling in the graph (fp32)
and its int8 version from ``optimizer.optimize`` (dynamic quantization). For each:

* cold start: process start to the first successful inference over HTTP (model file in the
  page cache), against the raw-onnxruntime process floor (start, import, create the session,
  first inference; its clock stops when that first result is printed, not when the process
  has torn down), medians of interleaved runs; the parts of both side by side: the floor
  prints its own, the server reports its own in ``/metrics`` (``aideploy_start_seconds``,
  ``aideploy_model_load_phase_seconds``);
* p50/p99 latency and throughput at concurrency 1, 8 and 32 over loopback, measured by a
  bounded-time load generator in its own process (asyncio, raw keep-alive sockets, binary
  tensors as tritonclient sends them), against onnxruntime called in-process on the same inputs
  in a loop (the single-process compute limit). Every window of the server sits between two
  windows of that loop, and the bars use the ratio to those two (median over the windows, left
  out where the two raw windows disagree: the shared machine changed speed meanwhile), since
  this machine's speed drifts by tens of percent within seconds;
* resident memory of the server after the load against the raw-onnxruntime process.

Prints rich tables and the bars, writes ``benchmarks/results/serving.json`` and exits 1 when
a bar is missed. ``--smoke`` runs every step once with short windows (a check that the
harness works, in about a minute once the models are cached): its numbers judge nothing, so it
prints the bars without failing on them and writes ``serving-smoke.json`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository first, before benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
THREADS = 2
SEQUENCE = 128
RAW_ENVIRONMENT = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
"""The raw onnxruntime processes start as the server does (:func:`serving.config.single_threaded_blas`):
with OpenBLAS's spinning workers the floor's session took ~15 ms longer, a handicap of the
floor, not a merit of the server."""
console = Console(width=150 if not sys.stdout.isatty() else None)

# Raw onnxruntime: the same process shape as the server's start, minus the server.
FLOOR = """
import time
started = time.perf_counter()
import json, sys
import numpy as np
import onnxruntime as ort
imported = time.perf_counter()
options = ort.SessionOptions()
options.intra_op_num_threads = {threads}
options.inter_op_num_threads = 1
options.log_severity_level = 3
session = ort.InferenceSession({model!r}, options, providers=["CPUExecutionProvider"])
created = time.perf_counter()
feeds = {{name: np.array(values, dtype=dtype).reshape(shape) for name, (values, dtype, shape) in {inputs!r}.items()}}
session.run(None, feeds)
done = time.perf_counter()
print(json.dumps({{"imports": imported - started, "session": created - imported, "first_run": done - created}}), flush=True)
"""


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    throughput: float
    requests: int
    errors: int = 0

    @classmethod
    def of(cls, seconds: list[float], elapsed: float, errors: int = 0) -> Latency:
        if not seconds:
            raise RuntimeError(
                f"no request completed in the {elapsed:.2f}s window ({errors} failed): "
                "the machine is too busy for windows this short"
            )
        ordered = sorted(seconds)
        return cls(
            p50_ms=1000 * ordered[len(ordered) // 2],
            p99_ms=1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            throughput=len(ordered) / elapsed,
            requests=len(ordered),
            errors=errors,
        )


RAW_VARIANTS = {"default": (True, 1), "no spin": (False, 1), "2 parallel runs": (True, 2)}
"""Label: (idle threads spin, runs at once). onnxruntime as it comes (idle threads spin, the
server's default too), with them asleep (the server's ``--spin-wait false``), and two threads
each running requests on a one-thread session (the server's ``--parallel-runs 2``)."""
STEADY_BRACKET = 0.10
"""A window counts in the paired figures only if the raw windows right before and right after
it agree within this fraction: the shared machine did not change speed in between."""


@dataclass
class Paired:
    """One level against the default raw loop measured right before and right after each of its
    windows (the machine's speed drifts; a ratio from adjacent windows does not)."""

    throughput_ratio: float
    """Median over the kept windows of the level's req/s over the mean of its two raw windows."""
    p50_delta_ms: float
    """Median over the kept windows of the level's p50 minus the mean of the raw p50s."""
    kept: int
    """Windows whose raw brackets agreed (all windows are used when none did)."""
    windows: int

    @classmethod
    def of(cls, windows: list[tuple[Latency, Latency, Latency]]) -> Paired:
        """From ``(raw before, level, raw after)`` windows."""
        stable = [
            (before, level, after)
            for before, level, after in windows
            if abs(before.throughput - after.throughput)
            <= STEADY_BRACKET * max(before.throughput, after.throughput)
        ]
        used = stable or windows
        return cls(
            throughput_ratio=statistics.median(
                level.throughput / ((before.throughput + after.throughput) / 2)
                for before, level, after in used
            ),
            p50_delta_ms=statistics.median(
                level.p50_ms - (before.p50_ms + after.p50_ms) / 2 for before, level, after in used
            ),
            kept=len(stable),
            windows=len(windows),
        )


@dataclass
class ModelResult:
    name: str
    file_mb: float
    floor_cold_s: float
    server_cold_s: float
    floor_parts_s: dict[str, float]
    """imports, session, first_run: durations inside the floor process."""
    server_parts_s: dict[str, float]
    """imports, session, first_run (durations) and listening_at, ready_at (since start)."""
    raw: dict[str, Latency]
    """Medians of each raw variant's windows."""
    server: dict[str, Latency] = field(default_factory=dict)
    """Medians of each server level's windows."""
    paired: dict[str, Paired] = field(default_factory=dict)
    """Each server level and the no-spin raw variant against the default raw loop."""
    raw_rss_mb: float = 0.0
    server_rss_mb: float = 0.0

    @property
    def cold_ratio(self) -> float:
        return self.server_cold_s / self.floor_cold_s


# --- helpers run in their own processes -----------------------------------------------------


def raw_loop(model: str, inputs: str, threads: int, spin: bool, parallel: int) -> None:
    """onnxruntime in-process, one request after another on each of ``parallel`` threads
    (sharing ``threads`` between them): the floor the server is held to.

    Serves measurement windows on request: each line on stdin is a number of seconds, each
    answer a JSON line with the latency of that window and the process's resident memory.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads // parallel
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feeds = dict(np.load(inputs))
    for _ in range(5):
        session.run(None, feeds)
    for line in sys.stdin:
        seconds = float(line)
        timings: list[float] = []
        started = time.perf_counter()
        work = (session, feeds, started + seconds, timings)
        callers = [threading.Thread(target=_run_until, args=work) for _ in range(parallel - 1)]
        for caller in callers:
            caller.start()
        _run_until(*work)
        for caller in callers:
            caller.join()
        elapsed = time.perf_counter() - started
        result = {"latency": asdict(Latency.of(timings, elapsed)), "rss_mb": rss_mb(os.getpid())}
        print(json.dumps(result), flush=True)


def _run_until(session: Any, feeds: dict[str, Any], deadline: float, timings: list[float]) -> None:
    """Runs back to back until ``deadline``, each one's duration into ``timings``."""
    while time.perf_counter() < deadline:
        before = time.perf_counter()
        session.run(None, feeds)
        timings.append(time.perf_counter() - before)


async def load_generator(
    port: int, request: bytes, concurrency: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """``concurrency`` keep-alive connections sending ``request`` back to back until time is up;
    only responses completed after ``warmup`` seconds count."""
    timings: list[float] = []
    errors = 0
    begin = time.perf_counter()
    measure_from, stop_at = begin + warmup, begin + warmup + seconds

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (now := time.perf_counter()) < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            done = time.perf_counter()
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            elif now >= measure_from:
                timings.append(done - now)
        writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return {"latency": asdict(Latency.of(timings, time.perf_counter() - measure_from, errors))}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# --- orchestration ----------------------------------------------------------------------------


def build_models(work: Path) -> dict[str, Path]:
    """The fp32 pooled encoder and the optimizer's int8 version of it (both cached in ``work``)."""
    from aideploy.schema import OptimizationRequest
    from benchmarks import models
    from optimizer import optimize
    from serving.model import model_file

    fp32 = models.build_text_encoder(work, pretrained=False, pooling=True, seq_len=SEQUENCE)
    request = OptimizationRequest.model_validate(
        {
            "method": "quantization",
            "metadata": {"precision": "int8", "batch_sizes": [1], "threads": THREADS},
        }
    )
    console.print("[dim]int8: optimizer.optimize (cached after the first run)[/]")
    int8 = model_file(optimize(fp32, request, work / "optimized").artifact, "int8")
    return {"encoder fp32": fp32, "encoder int8": int8}


def encoder_inputs(work: Path) -> tuple[Path, bytes, bytes]:
    """One realistic request (seeded token ids, full attention): as ``.npz`` for the raw
    process, and as HTTP bytes with binary tensors (tritonclient's default) and with JSON."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(1, SEQUENCE), dtype=np.int64)
    ids[0, 0], ids[0, -1] = 101, 102
    mask = np.ones((1, SEQUENCE), dtype=np.int64)
    path = work / "encoder_request.npz"
    np.savez(path, input_ids=ids, attention_mask=mask)
    header = {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": "INT64",
                "parameters": {"binary_data_size": array.nbytes},
            }
            for name, array in (("input_ids", ids), ("attention_mask", mask))
        ],
        "outputs": [{"name": "sentence_embedding", "parameters": {"binary_data": True}}],
    }
    document = json.dumps(header).encode()
    binary = document + ids.tobytes() + mask.tobytes()
    as_json = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": "INT64",
                    "data": array.ravel().tolist(),
                }
                for name, array in (("input_ids", ids), ("attention_mask", mask))
            ]
        }
    ).encode()
    return path, binary, as_json


def http_request(model: str, body: bytes, binary_header: bool) -> bytes:
    extra = f"Inference-Header-Content-Length: {_json_length(body)}\r\n" if binary_header else ""
    return (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


def _json_length(body: bytes) -> int:
    """Where the JSON header of a binary request ends (the decoder stops at the first object)."""
    return json.JSONDecoder().raw_decode(body.decode("latin-1"))[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(model: Path, name: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving",
            f"{name}={model}",
            "--port",
            str(port),
            "--threads",
            str(THREADS),
            "--log-level",
            "WARNING",
            *extra,
        ],
        cwd=ROOT,
    )


def exchange(port: int, request: bytes, deadline: float) -> bytes:
    """Connect (retrying while the port is not open yet), send, and read one response."""
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.001)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"server answered {head[:60]!r}: {body[:200]!r}")
    return body


def metrics(port: int) -> dict[str, float]:
    """The server's ``/metrics`` samples by name and labels."""
    text = exchange(
        port, b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n", time.perf_counter() + 5
    ).decode()
    return {
        key: float(value)
        for key, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    }


def server_parts(samples: dict[str, float], model: str) -> dict[str, float]:
    """The server's cold start in the floor's terms, from what it reports about itself."""

    def load(phase: str) -> float:
        return samples[f'aideploy_model_load_phase_seconds{{model="{model}",phase="{phase}"}}']

    return {
        "imports": samples['aideploy_start_seconds{phase="imports"}'],
        "session": load("session"),
        "first_run": load("warm_up"),
        "listening_at": samples['aideploy_start_seconds{phase="listening"}'],
        "ready_at": samples['aideploy_start_seconds{phase="ready"}'],
    }


def compile_server_bytecode() -> None:
    """Compile the server's modules as the image does at build time (``serving/Dockerfile``).

    Where ``PYTHONDONTWRITEBYTECODE`` is set (the image sets it, and so may the shell running
    this), nothing else would, and every start would compile the server's sources first:
    ~20 ms that no deployed server spends."""
    import compileall

    compileall.compile_dir(ROOT / "serving", quiet=1)
    for module in ("__init__.py", "errors.py"):
        compileall.compile_file(ROOT / "aideploy" / module, quiet=1)


def cold_start(
    model: Path, inputs: Path, request: bytes, runs: int
) -> tuple[float, float, dict[str, float], dict[str, float]]:
    """Interleaved floor/server cold starts, each clock stopped at its first result; medians
    of the totals and of the parts."""
    compile_server_bytecode()
    model.read_bytes()  # into the page cache
    floors, servers, floor_parts, served_parts = [], [], [], []
    literal = {
        name: (a.ravel().tolist(), a.dtype.str, a.shape) for name, a in np.load(inputs).items()
    }
    script = FLOOR.format(threads=THREADS, model=str(model), inputs=literal)
    for _ in range(runs):
        started = time.perf_counter()
        floor = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=RAW_ENVIRONMENT
        )
        assert floor.stdout is not None
        line = floor.stdout.readline()  # printed right after the first inference
        floors.append(time.perf_counter() - started)
        if floor.wait() != 0 or not line:
            raise RuntimeError(f"the raw onnxruntime process failed ({floor.returncode})")
        floor_parts.append(json.loads(line))
        port = free_port()
        started = time.perf_counter()
        server = start_server(model, "m", port)
        try:
            exchange(port, request, started + 60)
            servers.append(time.perf_counter() - started)
            served_parts.append(server_parts(metrics(port), "m"))
        finally:
            server.terminate()
            server.wait()
    return (
        statistics.median(floors),
        statistics.median(servers),
        {key: statistics.median(p[key] for p in floor_parts) for key in floor_parts[0]},
        {key: statistics.median(p[key] for p in served_parts) for key in served_parts[0]},
    )


def run_helper(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"helper {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return dict(json.loads(result.stdout))


BATCHING = ("--max-batch-size", "8", "--max-batch-delay-ms", "2")
NO_SPIN = ("--spin-wait", "false")
PARALLEL = ("--parallel-runs", "2")
# (label, JSON body instead of binary, concurrency, extra server options)
LEVELS: tuple[tuple[str, bool, int, tuple[str, ...]], ...] = (
    ("c=1 binary", False, 1, ()),
    ("c=1 json", True, 1, ()),
    ("c=8 binary", False, 8, ()),
    ("c=32 binary", False, 32, ()),
    ("c=1 binary, no spin", False, 1, NO_SPIN),
    ("c=8 binary, no spin", False, 8, NO_SPIN),
    ("c=1 binary, 2 parallel runs", False, 1, PARALLEL),
    ("c=8 binary, 2 parallel runs", False, 8, PARALLEL),
    ("c=8 binary, batching 8/2ms", False, 8, BATCHING),
    ("c=32 binary, batching 8/2ms", False, 32, BATCHING),
)


class RawProcess:
    """onnxruntime in its own process (see :func:`raw_loop`), measured window by window."""

    def __init__(self, model: Path, inputs: Path, spin: bool, parallel: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "raw",
                str(model),
                str(inputs),
                "spin" if spin else "no-spin",
                str(parallel),
            ],
            cwd=ROOT,
            env=RAW_ENVIRONMENT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.windows: list[Latency] = []
        self.rss_mb = 0.0

    def measure(self, seconds: float) -> Latency:
        commands, answers = self.process.stdin, self.process.stdout
        assert commands is not None
        assert answers is not None
        commands.write(f"{seconds}\n")
        commands.flush()
        answer = json.loads(answers.readline())
        self.windows.append(Latency(**answer["latency"]))
        self.rss_mb = float(answer["rss_mb"])
        return self.windows[-1]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


@dataclass
class Steady:
    raw: dict[str, Latency]
    raw_rss_mb: float
    server: dict[str, Latency]
    paired: dict[str, Paired]
    server_rss_mb: float


def steady_state(
    name: str,
    model: Path,
    inputs: Path,
    binary: bytes,
    as_json: bytes,
    seconds: float,
    rounds: int,
    warmup: float,
) -> Steady:
    """Every server level and the other raw variants, ``rounds`` times, each window between two
    windows of the default raw loop (raw, level, raw, level, ..., raw), so each level is paired
    with the machine's speed right around it; medians per level too. The raw variants are
    measured beside the plain server; its memory is read after its levels (the servers with
    other options run separately)."""
    raws = {
        label: RawProcess(model, inputs, spin, parallel)
        for label, (spin, parallel) in RAW_VARIANTS.items()
    }
    default = raws["default"]
    variants = {label: raw for label, raw in raws.items() if raw is not default}
    windows: dict[str, list[Latency]] = {label: [] for label, *_ in LEVELS}
    bracketed: dict[str, list[tuple[Latency, Latency, Latency]]] = {
        label: [] for label in (*(f"raw {label}" for label in variants), *windows)
    }
    server_rss = 0.0
    try:
        with tempfile.TemporaryDirectory() as scratch:
            request_file = Path(scratch) / "request"
            for options in dict.fromkeys(level[3] for level in LEVELS):
                port = free_port()
                server = start_server(model, "m", port, *options)
                try:
                    exchange(port, http_request("m", binary, True), time.perf_counter() + 60)
                    levels = [level for level in LEVELS if level[3] == options]
                    for round_number in range(rounds):
                        console.print(
                            f"[dim]{name}: {', '.join(level[0] for level in levels)}; "
                            f"round {round_number + 1}/{rounds}[/]"
                        )
                        after = default.measure(seconds)
                        beside = variants if not options else {}
                        for label, raw in beside.items():
                            before, window = after, raw.measure(seconds)
                            after = default.measure(seconds)
                            bracketed[f"raw {label}"].append((before, window, after))
                        for label, use_json, concurrency, _ in levels:
                            body = as_json if use_json else binary
                            request_file.write_bytes(http_request("m", body, not use_json))
                            result = run_helper(
                                "load",
                                str(port),
                                str(request_file),
                                str(concurrency),
                                str(seconds),
                                str(warmup),
                            )
                            window = Latency(**result["latency"])
                            windows[label].append(window)
                            before, after = after, default.measure(seconds)
                            bracketed[label].append((before, window, after))
                    if not options:
                        server_rss = rss_mb(server.pid)
                finally:
                    server.terminate()
                    server.wait()
    finally:
        for raw in raws.values():
            raw.stop()
    return Steady(
        raw={label: _median(raw.windows) for label, raw in raws.items()},
        raw_rss_mb=default.rss_mb,
        server={label: _median(found) for label, found in windows.items()},
        paired={label: Paired.of(found) for label, found in bracketed.items()},
        server_rss_mb=server_rss,
    )


def _median(windows: list[Latency]) -> Latency:
    return Latency(
        p50_ms=statistics.median(w.p50_ms for w in windows),
        p99_ms=statistics.median(w.p99_ms for w in windows),
        throughput=statistics.median(w.throughput for w in windows),
        requests=sum(w.requests for w in windows),
        errors=sum(w.errors for w in windows),
    )


def bars(results: list[ModelResult]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for result in results:
        # Paired against the default raw loop; should sleeping threads ever be the faster raw
        # variant, the bars are held to that one instead. Parallel runs are held to raw
        # onnxruntime running that way: its compute limit with two runs at once.
        no_spin = result.paired["raw no spin"]
        c1_delta = result.paired["c=1 binary"].p50_delta_ms - min(0.0, no_spin.p50_delta_ms)
        c8_ratio = result.paired["c=8 binary"].throughput_ratio / max(1.0, no_spin.throughput_ratio)
        c8_parallel = (
            result.paired["c=8 binary, 2 parallel runs"].throughput_ratio
            / result.paired["raw 2 parallel runs"].throughput_ratio
        )
        checks += [
            {
                "model": result.name,
                "bar": "cold start <= 1.2x raw onnxruntime",
                "value": f"{result.cold_ratio:.2f}x",
                "met": result.cold_ratio <= 1.2,
            },
            {
                "model": result.name,
                "bar": "c=1 p50 within 0.5 ms of raw (best variant, paired)",
                "value": f"{c1_delta:+.2f} ms",
                "met": c1_delta <= 0.5,
            },
            {
                "model": result.name,
                "bar": "c=8 throughput >= 95% of raw (best variant, paired)",
                "value": f"{100 * c8_ratio:.1f}%",
                "met": c8_ratio >= 0.95,
            },
            {
                "model": result.name,
                "bar": "c=8 throughput >= 95% of raw, both 2 parallel runs (paired)",
                "value": f"{100 * c8_parallel:.1f}%",
                "met": c8_parallel >= 0.95,
            },
            {
                "model": result.name,
                "bar": "memory <= raw + 60 MB",
                "value": f"{result.server_rss_mb - result.raw_rss_mb:+.1f} MB",
                "met": result.server_rss_mb - result.raw_rss_mb <= 60,
            },
        ]
    return checks


def print_tables(
    results: list[ModelResult], checks: list[dict[str, Any]], cold_runs: int, judged: bool
) -> None:
    cold = Table(
        title=f"Cold start, seconds (median of {cold_runs}; process start to first inference, "
        "the server's over HTTP; parts inside each process)",
        caption="The server's first run is the waiting request's, which is its warm-up: timed "
        "from the model being loaded to that run's end, hand-off to the inference thread included.",
    )
    for column in (
        "model",
        "size MB",
        "process",
        "total",
        "imports",
        "session",
        "first run",
        "listening at",
        "ready at",
        "ratio",
    ):
        cold.add_column(column, justify="left" if column in ("model", "process") else "right")
    for r in results:
        for process, total, parts in (
            ("raw onnxruntime", r.floor_cold_s, r.floor_parts_s),
            ("server", r.server_cold_s, r.server_parts_s),
        ):
            server = process == "server"
            cold.add_row(
                "" if server else r.name,
                "" if server else f"{r.file_mb:.1f}",
                process,
                f"{total:.3f}",
                *(f"{parts[key]:.3f}" for key in ("imports", "session", "first_run")),
                *(f"{parts[key]:.3f}" if server else "" for key in ("listening_at", "ready_at")),
                f"{r.cold_ratio:.2f}x" if server else "",
            )
    console.print(cold)
    steady = Table(
        title=f"Latency and throughput over loopback ({THREADS} threads, seq {SEQUENCE}, batch 1)",
        caption="p50, p99, req/s: medians over the windows. Paired: each window against the "
        "default raw loop measured right before and after it (median over the windows whose two "
        f"raw windows agree within {STEADY_BRACKET:.0%}; kept/all).",
    )
    for column in (
        "model",
        "client",
        "p50 ms",
        "p99 ms",
        "req/s",
        "paired req/s vs raw",
        "paired p50 vs raw",
        "kept",
        "errors",
    ):
        steady.add_column(column, justify="right" if column not in ("model", "client") else "left")
    for r in results:
        rows = [
            (f"raw onnxruntime loop, {label}", latency, r.paired.get(f"raw {label}"))
            for label, latency in r.raw.items()
        ]
        rows += [
            (f"server {label}", latency, r.paired[label]) for label, latency in r.server.items()
        ]
        for index, (client, latency, paired) in enumerate(rows):
            steady.add_row(
                r.name if index == 0 else "",
                client,
                f"{latency.p50_ms:.2f}",
                f"{latency.p99_ms:.2f}",
                f"{latency.throughput:.1f}",
                f"{100 * paired.throughput_ratio:.1f}%" if paired else "100%",
                f"{paired.p50_delta_ms:+.2f} ms" if paired else "",
                f"{paired.kept}/{paired.windows}" if paired else "",
                str(latency.errors),
            )
        steady.add_row(
            "",
            "resident memory MB (raw / server)",
            f"{r.raw_rss_mb:.0f}",
            f"{r.server_rss_mb:.0f}",
            *([""] * 5),
        )
    console.print(steady)
    verdict = Table(title="Bars" if judged else "Bars (smoke run: shown, not judged)")
    for column in ("model", "bar", "value", "met"):
        verdict.add_column(column)
    for check in checks:
        verdict.add_row(
            check["model"],
            check["bar"],
            check["value"],
            "[green]yes[/]" if check["met"] else "[red]no[/]",
        )
    console.print(verdict)


@dataclass(frozen=True)
class Plan:
    """How long to measure: the full run judges the bars, the smoke run only the harness."""

    cold_runs: int
    seconds: float
    rounds: int
    warmup: float
    judged: bool


FULL = Plan(cold_runs=7, seconds=2.0, rounds=4, warmup=1.0, judged=True)
SMOKE = Plan(cold_runs=1, seconds=1.0, rounds=1, warmup=0.5, judged=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "aideploy-bench-serving"
    )
    parser.add_argument(
        "--seconds", type=float, default=FULL.seconds, help="Seconds per measurement window."
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=FULL.rounds,
        help="Windows per level, each between two raw windows.",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="Every step once, briefly; the bars are not judged."
    )
    args = parser.parse_args()
    plan = SMOKE if args.smoke else Plan(FULL.cold_runs, args.seconds, args.rounds, 1.0, True)
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    console.print(
        f"[bold]serving benchmark[/]{' (smoke)' if args.smoke else ''} (models cached in {work}; "
        f"load average {load_before[0]:.2f})"
    )
    inputs, binary, as_json = encoder_inputs(work)
    results: list[ModelResult] = []
    for name, model in build_models(work).items():
        console.print(f"[bold]{name}[/]: cold starts")
        floor, served, floor_parts, served_parts = cold_start(
            model, inputs, http_request("m", binary, True), plan.cold_runs
        )
        steady = steady_state(
            name, model, inputs, binary, as_json, plan.seconds, plan.rounds, plan.warmup
        )
        results.append(
            ModelResult(
                name,
                model.stat().st_size / 1e6,
                floor,
                served,
                floor_parts,
                served_parts,
                raw=steady.raw,
                server=steady.server,
                paired=steady.paired,
                raw_rss_mb=steady.raw_rss_mb,
                server_rss_mb=steady.server_rss_mb,
            )
        )
    checks = bars(results)
    print_tables(results, checks, plan.cold_runs, plan.judged)
    output = RESULTS / ("serving-smoke.json" if args.smoke else "serving.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                },
                "plan": asdict(plan),
                "threads": THREADS,
                "sequence_length": SEQUENCE,
                "models": [{**asdict(r), "cold_ratio": r.cold_ratio} for r in results],
                "bars": checks,
            },
            indent=2,
        )
    )
    console.print(f"written {output.relative_to(ROOT)}")
    failed = sum(latency.errors for r in results for latency in r.server.values())
    if failed:
        console.print(f"[red]{failed} request(s) failed during the load: the run is invalid[/]")
        return 1
    missed = [check for check in checks if not check["met"]]
    if missed and plan.judged:
        console.print(f"[red]{len(missed)} bar(s) missed[/]")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "raw":
        raw_loop(sys.argv[2], sys.argv[3], THREADS, sys.argv[4] == "spin", int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "load":
        port, request_file, concurrency, seconds, warmup = sys.argv[2:7]
        work = load_generator(
            int(port),
            Path(request_file).read_bytes(),
            int(concurrency),
            float(seconds),
            float(warmup),
        )
        try:  # the client's own overhead competes with the server for the CPU: keep it small
            import uvloop

            print(json.dumps(uvloop.run(work)))
        except ImportError:
            print(json.dumps(asyncio.run(work)))
    else:
        sys.exit(main())
