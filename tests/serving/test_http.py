"""HTTP/1.1 behaviour on raw sockets: keep-alive, pipelining, chunked bodies, 100-continue."""

from __future__ import annotations

import gzip
import json
import socket
import zlib

import pytest

from serving.http import ANSWERS_PER_TURN
from tests.serving.support import Server, infer_body, scale_input


def _read_response(sock: socket.socket, pending: bytearray) -> tuple[bytes, bytes]:
    """One response (head, body) off ``sock``; extra bytes stay in ``pending``."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response arrived"
        pending += chunk
    end = pending.index(b"\r\n\r\n")
    head = bytes(pending[:end])
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(pending) < end + 4 + length:
        pending += sock.recv(65536)
    body = bytes(pending[end + 4 : end + 4 + length])
    del pending[: end + 4 + length]
    return head, body


def _post(body: bytes, extra: str = "") -> bytes:
    return (
        f"POST /v2/models/scale/infer HTTP/1.1\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


def test_keep_alive_serves_many_requests_on_one_connection_with_nodelay(server: Server) -> None:
    body = json.dumps(infer_body(scale_input([[1, 1, 1, 1]]))).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        pending = bytearray()
        for _ in range(50):
            sock.sendall(_post(body))
            head, data = _read_response(sock, pending)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"Connection: close" not in head
            assert json.loads(data)["outputs"][0]["data"] == [1, 2, 3, 4]


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    """More than one turn's worth (``ANSWERS_PER_TURN``): the rest follow on later turns."""
    count = 3 * ANSWERS_PER_TURN + 1
    requests = [json.dumps(infer_body(scale_input([[i, 0, 0, 0]]))).encode() for i in range(count)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"".join(_post(body) for body in requests) + b"GET /v2/health/live HTTP/1.1\r\n\r\n"
        )
        pending = bytearray()
        for i in range(count):
            _, data = _read_response(sock, pending)
            assert json.loads(data)["outputs"][0]["data"][0] == i
        head, _ = _read_response(sock, pending)
        assert head.startswith(b"HTTP/1.1 200 ")


def test_chunked_request_body(server: Server) -> None:
    body = json.dumps(infer_body(scale_input([[2, 2, 2, 2]]))).encode()
    chunks = b"".join(
        f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n" for part in (body[:10], body[10:])
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/scale/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunks
            + b"0\r\nX-Trailer: yes\r\n\r\n"
        )
        head, data = _read_response(sock, bytearray())
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(data)["outputs"][0]["data"] == [2, 4, 6, 8]


def test_expect_100_continue_is_answered_before_the_body(server: Server) -> None:
    body = json.dumps(infer_body(scale_input([[1, 1, 1, 1]]))).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_post(body, "Expect: 100-continue\r\n")[: -len(body)])
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        head, _ = _read_response(sock, bytearray())
    assert head.startswith(b"HTTP/1.1 200 ")


def test_http_1_0_and_connection_close_end_the_connection(server: Server) -> None:
    for request in (
        b"GET /v2/health/live HTTP/1.0\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"Connection: close" in answer


def test_head_gets_headers_only(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"HEAD /v2/models/scale HTTP/1.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: 0" not in head
    assert body == b""


def test_percent_encoded_model_name(server: Server) -> None:
    assert server.request("GET", "/v2/models/%73cale")[0] == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_bodies(server: Server, encoding: str) -> None:
    body = json.dumps(infer_body(scale_input([[3, 3, 3, 3]]))).encode()
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    status, _, data = server.request(
        "POST", "/v2/models/scale/infer", packed, {"Content-Encoding": encoding}
    )
    assert status == 200, data
    assert json.loads(data)["outputs"][0]["data"] == [3, 6, 9, 12]


@pytest.mark.parametrize(
    ("body", "encoding", "status", "needle"),
    [
        (b"\x1f\x8bnot gzip", "gzip", 400, "gzip request body is corrupt"),
        (gzip.compress(b"{}")[:-12], "gzip", 400, "truncated"),
        (
            gzip.compress(b" " * 3 * 2**20),
            "gzip",
            413,
            "decompressed request body exceeds the limit",
        ),
        (b"{}", "br", 415, "Content-Encoding 'br' is not supported"),
    ],
)
def test_bad_compressed_bodies(
    server: Server, body: bytes, encoding: str, status: int, needle: str
) -> None:
    got, _, data = server.request(
        "POST", "/v2/models/scale/infer", body, {"Content-Encoding": encoding}
    )
    assert got == status
    assert needle in json.loads(data)["error"]
