"""A streaming ``multipart/form-data`` reader for model uploads.

Litestar's own form parsing spools the file part into a temporary object before the handler
runs; a model can be gigabytes, so the upload handler reads the raw request stream instead:
each file part (the model, ``file``, and its optional example inputs, ``sample_data``) goes
straight to a staging file in 1 MiB blocks (hashed and written in a worker thread), the size
limit is enforced while the bytes arrive, and a failed upload leaves nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio.to_thread
from litestar import Request
from multipart import (  # type: ignore[import-untyped]
    MultipartSegment,
    ParserError,
    ParserLimitReached,
    PushMultipartParser,
    parse_options_header,
)

from api.errors import ApiError, InvalidFieldError, PayloadTooLargeError

_BLOCK = 1024 * 1024
_MAX_FIELD_BYTES = 64 * 1024
_MAX_PARTS = 16
_FORM_OVERHEAD = _MAX_PARTS * _MAX_FIELD_BYTES
"""Bytes the text fields and part headers may add on top of the files."""
SAMPLE_DATA_NAME = "sample_data.npz"
"""The staged sample data's name: the checker's messages quote it."""
_FILE_PARTS = {"file": "the model", "sample_data": "the sample data"}
"""The form's file parts, each limited to ``max_upload_bytes`` on its own."""


@dataclass
class StagedFile:
    """One uploaded file on local disk, with what was learned while receiving it."""

    path: Path
    filename: str
    size: int
    sha256: str


@dataclass
class StagedUpload:
    """The upload's private staging folder: the model (``file``) alone in ``model/``, the
    optional ``sample_data`` alone in ``sample_data/``, and ``convert/``, the only place the
    converter may write."""

    folder: Path
    file: StagedFile
    sample_data: StagedFile | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def convert_dir(self) -> Path:
        return self.folder / "convert"


class _StagingFile:
    """Accumulates a file part and writes it in blocks off the event loop."""

    def __init__(self, name: str, path: Path, max_bytes: int) -> None:
        self.name = name
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()
        self.buffer = bytearray()
        path.parent.mkdir(mode=0o700)
        self.handle: IO[bytes] = path.open("wb")

    async def write(self, data: bytes | bytearray) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLargeError(
                f"{self.name}: {_FILE_PARTS[self.name]} is larger than the limit of "
                f"{self.max_bytes} bytes (max_upload_bytes)"
            )
        self.buffer += data
        if len(self.buffer) >= _BLOCK:
            await self.flush()

    async def flush(self) -> None:
        if self.buffer:
            block, self.buffer = bytes(self.buffer), bytearray()
            await anyio.to_thread.run_sync(self._write_block, block)

    def _write_block(self, block: bytes) -> None:
        self.digest.update(block)
        self.handle.write(block)

    def close(self) -> None:
        self.handle.close()

    def staged(self, filename: str) -> StagedFile:
        return StagedFile(self.path, filename, self.size, self.digest.hexdigest())


async def receive_model_upload(
    request: Request[Any, Any, Any], folder: Path, max_bytes: int
) -> StagedUpload:
    """Read the form into ``folder``, a new private folder (0700). The model lands alone in a
    folder of its own under a random name: a model file that points at "external data" finds
    nothing there to read (not the sample data either). The folder is removed again on error;
    on success the caller removes it once the files have moved into the store."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != "multipart/form-data" or not options.get("boundary"):
        raise ApiError("Content-Type must be multipart/form-data with a boundary")
    try:
        declared = int(request.headers.get("content-length") or -1)
    except ValueError:
        raise ApiError("Content-Length must be a number of bytes") from None
    if declared > len(_FILE_PARTS) * max_bytes + _FORM_OVERHEAD:
        raise PayloadTooLargeError(
            f"file: the request ({declared} bytes) exceeds the upload limit of {max_bytes} bytes "
            f"for the model and as many for its sample_data (max_upload_bytes)"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(mode=0o700)
    try:
        upload = await _parse(request, options["boundary"], folder, max_bytes)
        upload.convert_dir.mkdir(mode=0o700)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return upload


def _staging_path(folder: Path, name: str) -> Path:
    if name == "file":
        return folder / "model" / secrets.token_hex(8)
    return folder / name / SAMPLE_DATA_NAME


async def _parse(
    request: Request[Any, Any, Any], boundary: str, folder: Path, max_bytes: int
) -> StagedUpload:
    fields: dict[str, str] = {}
    files: dict[str, tuple[_StagingFile, str]] = {}
    staging: _StagingFile | None = None
    segment: MultipartSegment | None = None
    text = bytearray()
    try:
        with PushMultipartParser(
            boundary, max_segment_count=_MAX_PARTS, max_header_size=8192
        ) as parser:
            async for chunk in request.stream():
                for part in parser.parse(chunk):
                    if isinstance(part, MultipartSegment):
                        segment, text, staging = part, bytearray(), None
                        if part.name in _FILE_PARTS:
                            if part.name in files:
                                raise InvalidFieldError(
                                    part.name, f"exactly one {part.name!r} part is expected"
                                )
                            staging = _StagingFile(
                                part.name, _staging_path(folder, part.name), max_bytes
                            )
                            files[part.name] = (staging, part.filename or "")
                    elif part:
                        if staging is not None:
                            await staging.write(part)
                        else:
                            text += part
                            if len(text) > _MAX_FIELD_BYTES:
                                raise InvalidFieldError(
                                    segment.name if segment else "form",
                                    f"form fields are limited to {_MAX_FIELD_BYTES} bytes",
                                )
                    elif segment is not None:
                        if staging is not None:
                            await staging.flush()
                            staging.close()
                        else:
                            fields[segment.name] = text.decode(segment.charset or "utf-8")
                        segment, staging = None, None
            for _ in parser.parse(b""):
                pass
    except ParserLimitReached:
        raise ApiError(f"multipart form: at most {_MAX_PARTS} parts are accepted") from None
    except (ParserError, UnicodeDecodeError) as exc:
        raise ApiError(f"multipart form: malformed ({exc})") from None
    finally:
        for staged, _ in files.values():
            staged.close()  # each is complete once its part ended; on error, discarded
    if "file" not in files:
        raise InvalidFieldError("file", "a file part named 'file' is required")
    for name, (staged, _) in files.items():
        if staged.size == 0:
            raise InvalidFieldError(name, f"{_FILE_PARTS[name]} is empty")
    model, model_name = files["file"]
    sample = files.get("sample_data")
    return StagedUpload(
        folder,
        model.staged(model_name),
        sample[0].staged(sample[1]) if sample else None,
        fields,
    )
