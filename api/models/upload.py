"""A streaming ``multipart/form-data`` reader for model uploads.

Litestar's own form parsing spools the file part into a temporary object before the handler
runs; a model can be gigabytes, so the upload handler reads the raw request stream instead:
the file part goes straight to a staging file in 1 MiB blocks (hashed and written in a worker
thread), the size limit is enforced while the bytes arrive, and a failed upload leaves nothing.
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
"""Bytes the text fields and part headers may add on top of the file."""


@dataclass
class StagedUpload:
    """The uploaded file on local disk, with what was learned while receiving it."""

    path: Path
    filename: str
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)


class _StagingFile:
    """Accumulates the file part and writes it in blocks off the event loop."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()
        self.buffer = bytearray()
        self.handle: IO[bytes] = path.open("wb")

    async def write(self, data: bytes | bytearray) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLargeError(
                f"file: the model is larger than the limit of {self.max_bytes} bytes "
                f"(max_upload_bytes)"
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


async def receive_model_upload(
    request: Request[Any, Any, Any], folder: Path, max_bytes: int
) -> StagedUpload:
    """Read the form; the ``file`` part lands in ``folder``, a new private folder (0700) that
    holds nothing else, under a random name: a model file that points at "external data" finds
    nothing there to read. The folder is removed again on error; on success the caller removes
    it once the file has moved into the store."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != "multipart/form-data" or not options.get("boundary"):
        raise ApiError("Content-Type must be multipart/form-data with a boundary")
    try:
        declared = int(request.headers.get("content-length") or -1)
    except ValueError:
        raise ApiError("Content-Length must be a number of bytes") from None
    if declared > max_bytes + _FORM_OVERHEAD:
        raise PayloadTooLargeError(
            f"file: the request ({declared} bytes) exceeds the upload limit of {max_bytes} bytes "
            f"(max_upload_bytes)"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(mode=0o700)
    try:
        return await _parse(request, options["boundary"], folder / secrets.token_hex(8), max_bytes)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


async def _parse(
    request: Request[Any, Any, Any], boundary: str, staging_path: Path, max_bytes: int
) -> StagedUpload:
    fields: dict[str, str] = {}
    filename: str | None = None
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
                        segment, text = part, bytearray()
                        if part.name == "file":
                            if staging is not None:
                                raise InvalidFieldError("file", "exactly one file part is expected")
                            filename = part.filename or "model"
                            staging = _StagingFile(staging_path, max_bytes)
                    elif part:
                        if segment is not None and segment.name == "file" and staging:
                            await staging.write(part)
                        else:
                            text += part
                            if len(text) > _MAX_FIELD_BYTES:
                                raise InvalidFieldError(
                                    segment.name if segment else "form",
                                    f"form fields are limited to {_MAX_FIELD_BYTES} bytes",
                                )
                    elif segment is not None:
                        if segment.name != "file":
                            fields[segment.name] = text.decode(segment.charset or "utf-8")
                        segment = None
            for _ in parser.parse(b""):
                pass
    except ParserLimitReached:
        raise ApiError(f"multipart form: at most {_MAX_PARTS} parts are accepted") from None
    except (ParserError, UnicodeDecodeError) as exc:
        raise ApiError(f"multipart form: malformed ({exc})") from None
    finally:
        if staging is not None:
            try:
                await staging.flush()
            finally:
                staging.close()
    if staging is None or filename is None:
        raise InvalidFieldError("file", "a file part named 'file' is required")
    if staging.size == 0:
        raise InvalidFieldError("file", "the uploaded file is empty")
    return StagedUpload(staging_path, filename, staging.size, staging.digest.hexdigest(), fields)
