"""Raw-socket HTTP/1.1 for tests that must send bytes no client library would send, and see
exactly what the server answers and whether it closes the connection."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int | None                 # None: the server sent no (complete) response head
    headers: dict = field(default_factory=dict)   # lower-case names
    body: bytes = b""
    closed: bool = False               # the server closed the connection after the answer
    raw: bytes = b""


def connect(url: str, timeout: float = 10, rcvbuf: int | None = None) -> socket.socket:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((host, int(port)))
    return s


def send(sock: socket.socket, data: bytes) -> None:
    """Send, tolerating a server that answers and closes before it read everything."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def read_answer(sock: socket.socket, timeout: float = 10, head_only: bool = False) -> Answer:
    """Read one response (Content-Length or chunked body; none for HEAD when head_only)."""
    deadline = time.monotonic() + timeout
    buf = b""
    answer = Answer(status=None)

    def more() -> bool:
        nonlocal buf
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout, TimeoutError):
            return False
        if not chunk:
            answer.closed = True
            return False
        buf += chunk
        return True

    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline or not more():
            answer.raw = buf
            return answer
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    answer.status = int(lines[0].split(" ", 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        answer.headers[name.strip().lower()] = value.strip()
    if head_only or answer.status in (204, 304) or 100 <= answer.status < 200:
        answer.raw = head
        return answer
    if answer.headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                if not more():
                    answer.body = body
                    return answer
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                if not more():
                    answer.body = body + buf
                    return answer
            body, buf = body + buf[:size], buf[size + 2:]
            if size == 0:
                break
        answer.body = body
    else:
        length = int(answer.headers.get("content-length", "0"))
        while len(buf) < length and more():
            pass
        answer.body = buf[:length]
    answer.raw = head
    return answer


def wait_closed(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closes the connection (reading and dropping what it sends),
    or None if it is still open after `timeout`."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return None
        except ConnectionResetError:
            return time.monotonic() - start
        if not chunk:
            return time.monotonic() - start
    return None


def exchange(url: str, data: bytes, timeout: float = 10) -> Answer:
    """Send `data` on a new connection, read one answer, and find out whether the server then
    closed the connection (waiting up to 3 s for it)."""
    with connect(url, timeout) as s:
        send(s, data)
        answer = read_answer(s, timeout)
        if not answer.closed and answer.status is not None:
            answer.closed = wait_closed(s, 3) is not None
        return answer


def get(path: str, host: str = "mirror", extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
