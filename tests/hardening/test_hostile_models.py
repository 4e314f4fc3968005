"""Hostile model files are rejected without running anything, through the inspector and through
``POST /models``; nothing of a rejected or oversized upload is kept (artifacts nor staging)."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from aideploy.errors import InputError
from api.context import ApiContext
from api.models import inspection
from optimizer import inspect_model
from optimizer.errors import InvalidModelError, UnsafeModelError
from optimizer.model_info import MAX_INFLATED_BYTES
from tests.api.conftest import Client, Upload, build_onnx_model
from tests.hardening.live import LiveApi, upload_model


class RunsCode:
    """A pickle payload: unpickling it runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def rewrite_archive(source: Path, target: Path, replace: Callable[[str], bytes | None]) -> Path:
    """Copy a zip archive, swapping the members ``replace`` returns bytes for."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for member in original.infolist():
            data = replace(member.filename)
            copy.writestr(member, original.read(member.filename) if data is None else data)
    return target


def onnx_with_external(folder: Path, location: str) -> Path:
    """A model whose weight lives in external data at ``location``."""
    weight = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], [0.0] * 12)
    weight.data_location = TensorProto.EXTERNAL
    del weight.float_data[:]
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "external",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "external.onnx"
    path.write_bytes(model.SerializeToString())
    return path


# --- ONNX ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_model_folder_is_never_read(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s" * 4096)
    folder = tmp_path / "model"
    folder.mkdir()
    location = {"parent": "../secret.bin", "absolute": str(secret), "symlink": "link.bin"}[kind]
    if kind == "symlink":
        (folder / "link.bin").symlink_to(secret)
    model = onnx_with_external(folder, location)

    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        inspect_model(model)


def onnx_with_absurd_tensor(path: Path) -> Path:
    """A model whose initializer ``W`` declares 2**82 floats (and holds one)."""
    huge = helper.make_tensor("W", TensorProto.FLOAT, [1], [0.0])
    del huge.dims[:]
    huge.dims.extend([2**31, 2**31, 2**20])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["W"], ["Y"])],
        "huge",
        [],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[huge],
    )
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


ABSURD_SIZE = r"tensor 'W' declares .* larger than any real model"


def test_absurd_declared_tensor_sizes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match=ABSURD_SIZE):
        inspect_model(onnx_with_absurd_tensor(tmp_path / "huge.onnx"))


# --- PyTorch archives ------------------------------------------------------------------------


@pytest.fixture
def torchscript(tmp_path: Path) -> Path:
    path = tmp_path / "doubler.pt"
    torch.jit.save(torch.jit.script(Doubler()), str(path))
    return path


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    path = tmp_path / "doubler.pt2"
    torch.export.save(torch.export.export(Doubler(), (torch.ones(2),)), str(path))
    return path


def compression_bomb(torchscript: Path, bomb: Path) -> Path:
    """``torchscript`` with a member of about 300 KB that inflates past the limit."""
    with (
        zipfile.ZipFile(torchscript) as original,
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as copy,
    ):
        for member in original.infolist():
            copy.writestr(member, original.read(member.filename))
        # About 300 KB on disk, inflating to more than the limit.
        with copy.open("doubler/code/padding.py", "w", force_zip64=True) as padding:
            block = b" " * (16 * 1024**2)
            for _ in range(MAX_INFLATED_BYTES // len(block) + 1):
                padding.write(block)
    assert bomb.stat().st_size < 1024**2
    return bomb


def test_a_torchscript_compression_bomb_is_rejected_before_inflating(
    torchscript: Path, tmp_path: Path
) -> None:
    with pytest.raises(UnsafeModelError, match="compression bomb"):
        inspect_model(compression_bomb(torchscript, tmp_path / "bomb.pt"))


def test_a_stored_member_lying_about_its_size_is_rejected(torchscript: Path) -> None:
    data = bytearray(torchscript.read_bytes())
    with zipfile.ZipFile(torchscript) as archive:
        member = next(m for m in archive.infolist() if m.compress_type == zipfile.ZIP_STORED)
    # Its central directory entry: signature, then the uncompressed size at byte 24.
    name = member.filename.encode()
    entry = data.find(b"PK\x01\x02")
    while entry >= 0 and data[entry + 46 : entry + 46 + len(name)] != name:
        entry = data.find(b"PK\x01\x02", entry + 4)
    assert entry >= 0
    data[entry + 24 : entry + 28] = (2**31).to_bytes(4, "little")
    liar = torchscript.with_name("liar.pt")
    liar.write_bytes(bytes(data))

    with pytest.raises(InvalidModelError, match="declares 2147483648 bytes"):
        inspect_model(liar)


@pytest.mark.parametrize("member", ["constants.pkl", "data.pkl"])
def test_torchscript_pickles_that_run_code_never_run(
    torchscript: Path, tmp_path: Path, member: str
) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps(RunsCode(marker), protocol=2)
    hostile = rewrite_archive(
        torchscript,
        tmp_path / "hostile.pt",
        lambda name: payload if name.endswith(member) else None,
    )

    with pytest.raises(InvalidModelError):
        inspect_model(hostile)
    assert not marker.exists()


def test_torch_export_pickles_that_run_code_never_run(exported: Path, tmp_path: Path) -> None:
    """torch.export.load retries a failed restricted unpickling unrestricted; aideploy does not."""
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"x": RunsCode(marker)}, buffer)
    hostile = rewrite_archive(
        exported,
        tmp_path / "hostile.pt2",
        lambda name: buffer.getvalue() if name.endswith("sample_inputs/model.pt") else None,
    )

    with pytest.raises(UnsafeModelError, match="arbitrary code"):
        inspect_model(hostile)
    assert not marker.exists()
    assert inspect_model(exported).format == "torch.export", "a genuine archive still loads"


def test_a_plain_pickle_is_rejected_unread(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(UnsafeModelError, match="pickle"):
        inspect_model(path)
    path = tmp_path / "saved.pt"
    torch.save(RunsCode(marker), str(path))
    with pytest.raises(UnsafeModelError, match="pickle"):
        inspect_model(path)
    assert not marker.exists()


# --- through the API -------------------------------------------------------------------------


def files_under(data_dir: Path) -> list[Path]:
    """Every file of the artifact store's folder and the upload staging folder."""
    folders = [data_dir / "staging", data_dir / "artifacts"]
    return sorted(path for folder in folders if folder.exists() for path in folder.rglob("*"))


async def test_hostile_uploads_are_422_and_leave_nothing(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    upload: Upload,
    exported: Path,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"x": RunsCode(marker)}, buffer)
    hostile_export = rewrite_archive(
        exported,
        tmp_path / "hostile.pt2",
        lambda name: buffer.getvalue() if name.endswith("sample_inputs/model.pt") else None,
    )
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps(RunsCode(marker)))
    escaping = onnx_with_external(tmp_path, "../../etc/passwd")
    before = files_under(context.settings.data_dir)

    for path, framework in ((hostile_export, "pytorch"), (pickled, "pytorch"), (escaping, "onnx")):
        response = await upload(alice, path=path, framework=framework)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "file", response.text

    assert not marker.exists()
    assert files_under(context.settings.data_dir) == before
    assert (await client.get("/models", headers=alice)).json() == []


async def test_absurd_sizes_and_compression_bombs_are_422_through_the_api(
    client: Client,
    context: ApiContext,
    alice: dict[str, str],
    upload: Upload,
    torchscript: Path,
    tmp_path: Path,
) -> None:
    before = files_under(context.settings.data_dir)
    absurd = await upload(alice, path=onnx_with_absurd_tensor(tmp_path / "huge.onnx"))
    assert absurd.status_code == 422, absurd.text
    assert absurd.json()["errors"][0]["field"] == "file"
    assert re.search(ABSURD_SIZE, absurd.json()["detail"]), absurd.text
    bomb = await upload(
        alice, path=compression_bomb(torchscript, tmp_path / "bomb.pt"), framework="pytorch"
    )
    assert bomb.status_code == 422, bomb.text
    assert bomb.json()["errors"][0]["field"] == "file"
    assert "compression bomb" in bomb.json()["detail"]
    assert files_under(context.settings.data_dir) == before
    assert (await client.get("/models", headers=alice)).json() == []


class LoadsAndWrites(torch.nn.Module):
    """TorchScript whose ``__setstate__`` (run while loading) writes into a file on the host."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.weight = torch.ones(2)
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        written = torch.from_file(state[1], True, 16, dtype=torch.uint8)
        written.fill_(65)
        self.weight = state[0]
        self.marker = state[1]
        self.training = state[2]


async def test_torchscript_that_runs_code_while_loading_is_422_and_never_runs(
    client: Client, context: ApiContext, alice: dict[str, str], upload: Upload, tmp_path: Path
) -> None:
    marker = tmp_path / "marker.bin"
    marker.write_bytes(b"\0" * 16)
    path = tmp_path / "setstate.pt"
    torch.jit.save(torch.jit.script(LoadsAndWrites(str(marker))), str(path))
    marker.write_bytes(b"\0" * 16)
    before = files_under(context.settings.data_dir)

    response = await upload(alice, path=path, framework="pytorch")

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "file"
    assert "__setstate__" in response.json()["detail"]
    assert marker.read_bytes() == b"\0" * 16, "the archive's code never ran"
    assert files_under(context.settings.data_dir) == before


async def test_pytorch_archives_are_only_ever_opened_in_the_confined_child(
    client: Client,
    alice: dict[str, str],
    torchscript: Path,
    exported: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small as they are, TorchScript and torch.export archives never load in the API process;
    only the ONNX they were converted to is read here (parsed, never executed)."""
    describe = inspection._describe

    def onnx_only(path: Path) -> dict[str, Any]:
        if zipfile.is_zipfile(path):
            raise AssertionError(f"{path} was inspected in the API process")
        return describe(path)

    monkeypatch.setattr(inspection, "_describe", onnx_only)
    sample = tmp_path / "doubler.npz"
    np.savez(sample, x=np.ones((3, 2), np.float32))
    for path, format_, sample_data in (
        (torchscript, "torchscript", sample),
        (exported, "torch.export", None),
    ):
        files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
        if sample_data is not None:
            files["sample_data"] = (sample.name, sample.read_bytes(), "application/octet-stream")
        response = await client.post(
            "/models", data={"name": "doubler", "framework": "pytorch"}, files=files, headers=alice
        )
        assert response.status_code == 201, response.text
        model = (await client.get(f"/models/{response.json()['model_id']}", headers=alice)).json()
        assert model["metadata"]["signature"]["format"] == format_
        assert model["metadata"]["serving"]["format"] == "onnx"


def test_the_inspector_child_runs_confined(tmp_path: Path) -> None:
    """The child limits itself before reading the upload: no file may grow, CPU and memory are
    bounded, and it sees none of the API's environment."""
    probe = (
        "import json, os, resource\n"
        "from api.models.inspection import _confine\n"
        "_confine(1000)\n"
        "limits = [resource.getrlimit(r)[0] for r in (resource.RLIMIT_FSIZE, resource.RLIMIT_CPU,"
        " resource.RLIMIT_AS, resource.RLIMIT_CORE)]\n"
        "try:\n"
        "    os.write(os.open('written', os.O_WRONLY | os.O_CREAT), b'x')\n"
        "    wrote = True\n"
        "except OSError:\n"
        "    wrote = False\n"
        "print(json.dumps([limits, wrote]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    [fsize, cpu, memory, core], wrote = json.loads(done.stdout)
    assert (fsize, core) == (0, 0)
    assert 0 < cpu <= inspection.TIMEOUT_SECONDS
    assert 0 < memory < 8 * 1024**3
    assert not wrote, "a write was refused"
    assert "AIDEPLOY_DATA_DIR" not in inspection._child_environment()


def test_the_conversion_child_writes_only_in_its_folder_within_its_budget(tmp_path: Path) -> None:
    """When it converts, the child may write beneath the upload's conversion folder only (not
    beside it, not through a link or a rename out of it), each file within the budget, and may
    open no TCP connection."""
    upload_folder = tmp_path / "upload-1"
    convert = upload_folder / "convert"
    convert.mkdir(parents=True)
    (upload_folder / "model").mkdir()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"untouched")
    probe = (
        "import json, os, socket, sys\n"
        "from pathlib import Path\n"
        "from api.models.inspection import _confine, conversion_budget\n"
        "convert, outside = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "_confine(1000, writable=convert)\n"
        "def attempt(action):\n"
        "    try:\n"
        "        action()\n"
        "    except OSError as exc:\n"
        "        return exc.errno\n"
        "    return 'done'\n"
        "def past_budget():\n"
        "    with open(convert / 'big', 'wb') as handle:\n"
        "        handle.seek(conversion_budget(1000))\n"
        "        handle.write(b'x')\n"
        "def connect():\n"
        "    socket.create_connection(('127.0.0.1', 5432), timeout=2).close()\n"
        "(convert / 'link').symlink_to(outside)\n"
        "print(json.dumps({\n"
        "    'inside': attempt(lambda: (convert / 'nested').mkdir() or"
        " (convert / 'nested' / 'm.onnx').write_bytes(b'onnx')),\n"
        "    'beside': attempt(lambda: (convert.parent / 'model' / 'x').write_bytes(b'x')),\n"
        "    'outside': attempt(lambda: outside.write_bytes(b'overwritten')),\n"
        "    'through a link': attempt(lambda: (convert / 'link').write_bytes(b'overwritten')),\n"
        "    'moved out': attempt(lambda: (convert / 'nested' / 'm.onnx').rename("
        "convert.parent / 'm.onnx')),\n"
        "    'removed outside': attempt(outside.unlink),\n"
        "    'past the budget': attempt(past_budget),\n"
        "    'tcp': attempt(connect),\n"
        "}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(convert), str(outside)],
        cwd=convert,
        capture_output=True,
        text=True,
        check=True,
    )
    results = json.loads(done.stdout)
    assert results.pop("inside") == "done"
    assert results.pop("past the budget") == errno.EFBIG
    assert results.pop("tcp") in (errno.EACCES, errno.ECONNREFUSED)
    assert all(result in (errno.EACCES, errno.EPERM) for result in results.values()), results
    assert outside.read_bytes() == b"untouched"
    assert sorted(path.name for path in upload_folder.iterdir()) == ["convert", "model"]


def test_without_landlock_the_child_inspects_but_refuses_to_convert(
    torchscript: Path, tmp_path: Path
) -> None:
    """A kernel that cannot keep the converter's writes in its folder gets no conversion (the
    API answers 503); inspecting, which writes nothing, still works."""
    convert = tmp_path / "convert"
    convert.mkdir()
    probe = (
        "import sys\n"
        "from api.models import inspection, sandbox\n"
        "sandbox._CREATE_RULESET = -1  # no such syscall: as on a kernel without Landlock\n"
        "sys.exit(inspection._main(sys.argv[1:]))\n"
    )
    size = str(torchscript.stat().st_size)

    def run(*arguments: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", probe, str(torchscript), size, *arguments],
            cwd=convert,
            env=inspection._child_environment(),
            capture_output=True,
            text=True,
            check=True,
        )
        answer: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return answer

    refused = run("--convert", str(convert))
    assert refused["field"] == "inspector"
    assert "Landlock" in refused["error"]
    assert list(convert.iterdir()) == []
    assert run()["signature"]["format"] == "torchscript"


async def test_a_conversion_writing_past_its_budget_in_many_files_is_stopped(
    torchscript: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No single file passes the budget (the kernel stops it), but many files could: the parent
    measures the folder while the child runs, and kills it once it holds more."""
    pid_file = tmp_path / "child.pid"
    writer = tmp_path / "writer.sh"
    writer.write_text(
        f"#!/bin/sh\necho $$ > {pid_file}\n"
        "for i in $(seq 1 64); do head -c 1048576 /dev/zero > file$i; done\nexec sleep 120\n"
    )
    writer.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(writer))  # the "python" the child is run with
    monkeypatch.setattr(inspection, "CONVERSION_OVERHEAD_BYTES", 4 * 1024**2)
    convert = tmp_path / "convert"
    convert.mkdir()

    with pytest.raises(InputError, match="converting it to ONNX wrote more than"):
        await inspection.inspect_upload_files(torchscript, convert_dir=convert)

    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # killed, not left writing


async def test_external_data_never_resolves_in_the_private_staging_folder(
    client: Client, context: ApiContext, alice: dict[str, str], upload: Upload, tmp_path: Path
) -> None:
    """An upload is alone in a folder of its own: its external data, inside the folder or next
    to it (another upload's staging folder), is never found."""
    before = files_under(context.settings.data_dir)
    for location in ("weights.bin", ".", "../upload-neighbour/weights.bin"):
        folder = tmp_path / location.replace("/", "_").replace(".", "dot")
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"\0" * 48)
        response = await upload(alice, path=onnx_with_external(folder, location))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "file"
        assert re.search("missing|outside the model's folder", response.json()["detail"])
    assert files_under(context.settings.data_dir) == before


def test_an_upload_over_the_limit_is_413_and_leaves_nothing(tmp_path: Path) -> None:
    """Streamed to a real server without a Content-Length (chunked), so the limit is enforced
    while the bytes arrive, not from a declared length."""
    limit = 1024 * 1024
    api = LiveApi(tmp_path / "data", extra_env={"AIDEPLOY_MAX_UPLOAD_BYTES": str(limit)})
    api.data_dir.mkdir()
    api.start()
    try:
        headers = api.headers()
        model = build_onnx_model(tmp_path / "tiny.onnx")
        upload_model(api, headers, model)  # one model kept: the failed upload must not touch it
        before = files_under(api.data_dir)
        oversized = model.read_bytes() + b"\0" * (4 * limit)
        boundary = "hardening-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="framework"\r\n\r\nonnx\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.onnx"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()

        def body() -> Iterator[bytes]:
            yield head
            for start in range(0, len(oversized), 64 * 1024):
                yield oversized[start : start + 64 * 1024]
            yield f"\r\n--{boundary}--\r\n".encode()

        response = httpx.post(
            f"{api.url}/models",
            content=body(),
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=60,
        )
        assert response.status_code == 413, response.text
        assert response.json()["status_code"] == 413
        assert files_under(api.data_dir) == before
        names = [m["name"] for m in httpx.get(f"{api.url}/models", headers=headers).json()]
        assert names == ["tiny"]
    finally:
        api.stop()
