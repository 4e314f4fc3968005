"""A small HTTP/1.1 server on asyncio protocols, made for one job: low-overhead inference calls.

It keeps connections alive (HTTP/1.1 default; pipelined requests are answered in order), sets
TCP_NODELAY so a response never waits for the client's delayed ACK (Nagle's ~40 ms stall),
accepts ``Content-Length`` and chunked bodies up to a limit (413 beyond it, answered before the
body is read), answers ``Expect: 100-continue``, closes idle connections, and drains gracefully:
stop accepting, finish what is in flight, close.

Why not uvicorn/starlette or aiohttp: importing them costs 50-150 ms of a ~300 ms cold-start
budget and their per-request overhead is several times this loop's; the protocol surface the
server needs (a dozen GET/POST routes) is small.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from serving.metrics import Metrics

__all__ = ["HttpServer", "Request", "Response"]

log = logging.getLogger("serving.http")

MAX_HEADER_BYTES = 64 * 1024
ANSWERS_PER_TURN = 8
"""Pipelined requests one connection gets answered on the spot before the event loop turns to
the other connections (the rest follow on its next turn)."""
LINGER_SECONDS = 2.0
_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ``", "``."""
    body: bytes


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Response | Awaitable[Response]]
"""Answers a request on the spot (a :class:`Response`) or later (an awaitable of one): answering
on the spot spares a task and a turn of the event loop per request."""
Refused = Callable[[str, int], None]
"""Told ``(target, status)`` of a request refused before it reached the handler."""


class _HttpError(Exception):
    """Framing the connection cannot recover from: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.target: str | None = None
        """The request target, when the request line got that far (for the metrics)."""


def is_whole_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts ``"²"``, which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def error_body(message: str) -> bytes:
    """The protocol's error object, ``{"error": "..."}``."""
    import json

    return json.dumps({"error": message}).encode()


class _Clock:
    """The ``Date`` header, formatted once per second rather than once per response."""

    second = -1
    text = ""

    @classmethod
    def date(cls) -> str:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.text = now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
        return cls.text


class HttpServer:
    """Owns the listening socket and the open connections; ``handler`` answers each request."""

    def __init__(
        self,
        handler: Handler,
        metrics: Metrics,
        *,
        max_body_bytes: int,
        keepalive_seconds: float,
        refused: Refused | None = None,
    ) -> None:
        self.handler = handler
        self.refused = refused
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.keepalive_seconds = keepalive_seconds
        self.connections: set[_Connection] = set()
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: asyncio.Server | None = None

    async def listen(self, host: str, port: int) -> int:
        """Start accepting; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=1024)
        return int(self._server.sockets[0].getsockname()[1])

    async def drain(self, grace_seconds: float) -> bool:
        """Stop accepting, let in-flight requests finish (at most ``grace_seconds``), close all
        connections. True if nothing had to be cut off."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close_when_idle()
        try:
            if not self._idle.is_set():
                await asyncio.wait_for(self._idle.wait(), grace_seconds)
            finished = True
        except TimeoutError:
            finished = False
            log.warning(
                "shutdown: %d request(s) still running after %gs, closing",
                self.metrics.in_flight,
                grace_seconds,
            )
        for connection in list(self.connections):
            connection.abort()
        return finished

    def started(self) -> None:
        self.metrics.in_flight += 1
        self._idle.clear()

    def finished(self) -> None:
        self.metrics.in_flight -= 1
        if self.metrics.in_flight == 0:
            self._idle.set()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests from the byte stream and writes the answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        """A request is being answered in a task; later ones wait in the buffer."""
        self.closing = False
        self.write_paused = False
        self.parse_after_resume = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self.last_active = self.loop.time()
        """When the last response was written: the idle timer checks it instead of being
        re-armed for every request."""
        self.continue_sent = False
        self.discarding = False
        self.head: tuple[str, str, str, dict[str, str], int] | None = None
        self.chunks: _Chunked | None = None
        self.task: asyncio.Task[None] | None = None
        """The request being answered (held so the event loop cannot drop it mid-flight)."""

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - protocol signature
        self.server.connections.discard(self)
        self._cancel_idle_timer()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            return
        self.buffer += data
        if self.busy:
            if len(self.buffer) > MAX_HEADER_BYTES + self.server.max_body_bytes and self.transport:
                self.transport.pause_reading()
            return
        self._parse()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.parse_after_resume:
            self.parse_after_resume = False
            self._parse()

    # --- shutdown -------------------------------------------------------------------------
    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- parsing ---------------------------------------------------------------------------
    def _parse(self) -> None:
        """Answer the complete requests in the buffer, in order: those the handler answers on
        the spot right here, until one has to be answered later (in a task; the rest wait)."""
        for _ in range(ANSWERS_PER_TURN):
            if self.busy or self.transport is None or self.transport.is_closing():
                return
            if self.write_paused:  # the client is not reading: stop taking its requests
                self.parse_after_resume = True
                return
            try:
                request = self._next_request()
            except _HttpError as exc:
                target = self.head[1] if self.head is not None else exc.target
                if target is not None and self.server.refused is not None:
                    self.server.refused(target, exc.status)
                self._send(
                    Response(exc.status, error_body(str(exc))),
                    keep_alive=False,
                    head_only=False,
                    linger=True,
                )
                return
            if request is None:
                return
            _, _, version, headers, _ = self.head or ("", "", "", {}, 0)
            self.head, self.chunks, self.continue_sent = None, None, False
            keep_alive = _keeps_alive(version, headers)
            self.server.started()
            try:
                answer = self.server.handler(request)
            except Exception:
                answer = _internal_error(request)
            if isinstance(answer, Response):
                self.server.finished()
                self._send(answer, keep_alive, head_only=request.method == "HEAD")
                continue
            self.busy = True
            self.task = self.loop.create_task(self._respond(answer, request, keep_alive))
            return
        if self.buffer:
            self.loop.call_soon(self._parse)

    def _next_request(self) -> Request | None:
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    raise _HttpError(431, "request headers exceed 64KiB")
                return None
            self.head = self._parse_head(bytes(self.buffer[:end]).decode("latin-1"))
            del self.buffer[: end + 4]
        method, target, _version, headers, length = self.head
        if length == -1:
            if self.chunks is None:
                self.chunks = _Chunked(self.server.max_body_bytes)
            body = self.chunks.feed(self.buffer)
        elif len(self.buffer) >= length:
            body = bytes(self.buffer[:length])
            del self.buffer[:length]
        else:
            body = None
        if body is None:
            if headers.get("expect", "").lower() == "100-continue" and not self.continue_sent:
                self.continue_sent = True
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        path, _, query = target.partition("?")
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding != "identity" and body:
            body = _decompress(body, encoding, self.server.max_body_bytes)
        return Request(method, path, query, headers, body)

    def _parse_head(self, head: str) -> tuple[str, str, str, dict[str, str], int]:
        """Request line and headers; the body length (-1 for chunked) checked against the limit."""
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[1].startswith("/"):
            raise _HttpError(400, f"malformed request line {lines[0][:100]!r}")
        method, target, version = parts
        try:
            headers, length = self._parse_headers(version, lines[1:])
        except _HttpError as exc:
            exc.target = target
            raise
        return method, target, version, headers, length

    def _parse_headers(self, version: str, lines: list[str]) -> tuple[dict[str, str], int]:
        """The header fields and the body length (-1 for chunked), checked against the limit."""
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _HttpError(505, f"{version[:20]!r} is not supported; use HTTP/1.1")
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _HttpError(400, f"malformed header line {line[:100]!r}")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        limit = self.server.max_body_bytes
        if "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked":
                raise _HttpError(
                    501, f"Transfer-Encoding {headers['transfer-encoding']!r} is not supported"
                )
            return headers, -1
        raw_length = headers.get("content-length", "0")
        if not is_whole_number(raw_length):
            raise _HttpError(400, f"Content-Length {raw_length[:40]!r} is not a number")
        length = int(raw_length)
        if length > limit:
            raise _HttpError(
                413, f"request body of {length} bytes exceeds the limit of {limit} bytes"
            )
        return headers, length

    # --- answering -----------------------------------------------------------------------------
    async def _respond(
        self, answer: Awaitable[Response], request: Request, keep_alive: bool
    ) -> None:
        """Await a later answer, write it, then take the requests that queued meanwhile."""
        try:
            response = await answer
        except Exception:
            response = _internal_error(request)
        finally:
            self.server.finished()
        self.busy = False
        self._send(response, keep_alive, head_only=request.method == "HEAD")
        if self.transport is not None:
            self.transport.resume_reading()  # paused if the buffer filled up meanwhile
            self._parse()

    def _send(
        self, response: Response, keep_alive: bool, head_only: bool, linger: bool = False
    ) -> None:
        """Write the response; ``linger`` (after a refused request whose body may still be
        arriving) half-closes and discards what comes for a moment, so the client reads the
        answer instead of a connection reset."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        keep_alive = keep_alive and not self.closing and not self.server.draining
        tally = self.server.metrics.http_responses
        tally[response.status] = tally.get(response.status, 0) + 1
        body = response.body
        lines = [
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
            f"Date: {_Clock.date()}",
            "Server: aideploy-serving",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(body)}",
        ]
        lines += (f"{name}: {value}" for name, value in response.headers)
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.server.metrics.bytes_out += len(head) + (0 if head_only else len(body))
        if head_only:
            transport.write(head)
        elif len(body) < 65536:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        if linger and transport.can_write_eof():
            self.discarding = True
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
            return
        if not keep_alive:
            transport.close()
            return
        self.last_active = self.loop.time()

    # --- idle connections ------------------------------------------------------------------------
    def _arm_idle_timer(self, delay: float | None = None) -> None:
        self._cancel_idle_timer()
        wait = self.server.keepalive_seconds if delay is None else delay
        self.idle_timer = self.loop.call_later(wait, self._idle_timeout)

    def _cancel_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle_timeout(self) -> None:
        """Close the connection if nothing happened on it for the keep-alive period; else look
        again when that period, counted from the last response, ends."""
        self.idle_timer = None
        if self.transport is None:
            return
        left = self.last_active + self.server.keepalive_seconds - self.loop.time()
        if self.busy:
            self._arm_idle_timer()
        elif left > 0:
            self._arm_idle_timer(left)
        else:
            self.transport.close()


def _internal_error(request: Request) -> Response:
    """A defect in the server, never the client's fault: logged with its traceback."""
    log.exception("unexpected error answering %s %s", request.method, request.path)
    return Response(500, error_body("internal server error; the server log has the details"))


def _keeps_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


class _Chunked:
    """Incremental decoder of a chunked body, consuming the connection buffer as it goes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.in_trailer = False

    def feed(self, buffer: bytearray) -> bytes | None:
        """The whole body once its last chunk and trailer arrived, else None (wait for more)."""
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    raise _HttpError(400, "malformed chunked body: chunk header line too long")
                return None
            if self.in_trailer:
                del buffer[: line_end + 2]
                if line_end == 0:
                    return b"".join(self.parts)
                continue
            size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):  # int() takes "-5"
                raise _HttpError(400, f"malformed chunked body: chunk size {size_text[:20]!r}")
            chunk_size = int(size_text, 16)
            if chunk_size == 0:
                del buffer[: line_end + 2]
                self.in_trailer = True
                continue
            if self.size + chunk_size > self.limit:
                raise _HttpError(413, f"request body exceeds the limit of {self.limit} bytes")
            start, stop = line_end + 2, line_end + 2 + chunk_size
            if len(buffer) < stop + 2:
                return None
            if buffer[stop : stop + 2] != b"\r\n":
                raise _HttpError(400, "malformed chunked body: chunk not followed by CRLF")
            self.parts.append(bytes(buffer[start:stop]))
            self.size += chunk_size
            del buffer[: stop + 2]


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A ``gzip`` or ``deflate`` request body (tritonclient's request compression), inflated
    to at most ``limit`` bytes so a small bomb cannot exhaust memory."""
    import zlib

    if encoding not in ("gzip", "deflate"):
        raise _HttpError(
            415, f"Content-Encoding {encoding[:40]!r} is not supported; use gzip, deflate or none"
        )
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _HttpError(400, f"the {encoding} request body is corrupt: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise _HttpError(413, f"the decompressed request body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise _HttpError(400, f"the {encoding} request body is truncated")
    return data
