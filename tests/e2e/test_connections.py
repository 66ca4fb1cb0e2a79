"""Connection limits on the public port: header-read deadline (slowloris), idle keep-alive
timeout, a client that stops reading, TCP keepalive on accepted sockets, and
server.max_connections (a clean 503 past it, the others unaffected)."""

from __future__ import annotations

import os
import select
import time

import pytest

from helpers import wait_until
from rawhttp import connect, get, read_answer, send, wait_closed

CONFIG = "/acme/tiny-model/resolve/main/config.json"
BIG = "/acme/big-model/resolve/main/big.bin"


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def request_ok(sock, path: str = CONFIG) -> None:
    send(sock, get(path))
    answer = read_answer(sock)
    assert answer.status == 200, answer
    assert not answer.closed


@pytest.fixture
def quick(emu, mirror_factory):
    """A mirror with short connection timeouts."""
    return mirror_factory(emu, server={"header_timeout": "2s", "idle_timeout": "2s",
                                       "send_timeout": "2s", "body_timeout": "2s"})


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(quick):
    with connect(quick.url) as s:
        request_ok(s)
        request_ok(s)          # keep-alive works
        waited = wait_closed(s, 10)
    assert waited is not None, "the idle keep-alive connection is still open after 10 s"
    assert 1.0 <= waited <= 6, waited


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(quick):
    with connect(quick.url) as s:
        waited = wait_closed(s, 10)
    assert waited is not None and waited <= 6, waited


@pytest.mark.parametrize("after_a_request", [False, True])
def test_a_slowloris_header_trickle_is_cut_with_408(quick, after_a_request):
    with connect(quick.url) as s:
        if after_a_request:
            request_ok(s)
        start = time.monotonic()
        send(s, b"GET " + CONFIG.encode() + b" HTTP/1.1\r\nHost: m\r\n")
        for i in range(40):                      # one header line every 0.25 s, never ending
            readable, _, _ = select.select([s], [], [], 0.25)
            if readable or time.monotonic() - start > 8:
                break                            # the server answered: stop sending
            try:
                s.sendall(f"X-Trickle-{i}: {'v' * 10}\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = read_answer(s, timeout=5)
        elapsed = time.monotonic() - start
    assert answer.status == 408, answer
    assert elapsed < 8, f"the trickle went on for {elapsed:.1f}s"


def test_a_slow_but_complete_head_within_the_timeout_is_served(quick):
    with connect(quick.url) as s:
        for part in (b"GET " + CONFIG.encode(), b" HTTP/1.1\r\n", b"Host: m\r\n", b"\r\n"):
            s.sendall(part)
            time.sleep(0.3)
        answer = read_answer(s)
    assert answer.status == 200, answer


def test_a_slow_request_body_is_cut(quick):
    body = b"paths=config.json&expand=false"
    with connect(quick.url) as s:
        send(s, get("/api/models/acme/tiny-model/paths-info/main", method="POST",
                    extra=f"Content-Type: application/x-www-form-urlencoded\r\n"
                          f"Content-Length: {len(body)}\r\n"))
        s.sendall(body[:5])
        start = time.monotonic()
        answer = read_answer(s, timeout=10)
        elapsed = time.monotonic() - start
    assert answer.status == 408, answer
    assert elapsed < 6, elapsed


def test_a_client_that_stops_reading_is_disconnected_and_frees_its_resources(quick, emu):
    size = emu.file("acme/big-model", "main", "big.bin")["size"]
    quick.get(BIG, allow_redirects=True)          # warm: the mirror serves it from disk
    pid = quick.proc.pid
    baseline = fd_count(pid)
    s = connect(quick.url, timeout=30, rcvbuf=16 * 1024)
    try:
        send(s, get(BIG))
        got = len(s.recv(4096))
        time.sleep(2 + 4)                         # send_timeout is 2 s; stop reading
        # Others are served meanwhile.
        assert quick.get(CONFIG).status_code == 200
        # Now read what is left: the server gave up, so the body ends early.
        s.settimeout(10)
        while True:
            try:
                chunk = s.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
    finally:
        s.close()
    assert got < size, "the whole file arrived: the stalled client was never cut off"
    wait_until(lambda: fd_count(pid) <= baseline, timeout=10, what="the connection's descriptors to be freed")


def accepted_socket_timers(port: int) -> list[int]:
    """The kernel timer kind of each established socket whose local port is `port`
    (/proc/net/tcp `tr` column: 0 none, 1 retransmit, 2 keepalive)."""
    timers = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state, timer = parts[1], parts[3], parts[5]
                    if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                        timers.append(int(timer.split(":")[0], 16))
        except OSError:
            continue
    return timers


def test_accepted_connections_have_tcp_keepalive(mirror):
    with connect(mirror.url) as s:
        request_ok(s)
        timers = wait_until(lambda: accepted_socket_timers(mirror.port), timeout=5,
                            what="the accepted socket in /proc/net/tcp")
        assert timers == [2], f"accepted socket timer kinds {timers}, expected keepalive (2)"


def test_connections_past_max_connections_get_a_clean_503_and_the_others_keep_working(
        emu, mirror_factory):
    m = mirror_factory(emu, server={"max_connections": 3, "idle_timeout": "30s"})
    held = [connect(m.url) for _ in range(3)]
    try:
        for s in held:
            request_ok(s)
        with connect(m.url) as extra:
            send(extra, get(CONFIG))
            answer = read_answer(extra)
            assert answer.status == 503, answer
            assert answer.headers.get("retry-after") == "1"
            assert answer.headers.get("connection", "").lower() == "close"
            assert "max_connections" in answer.headers.get("x-error-message", "")
            assert wait_closed(extra, 5) is not None, "the refused connection was left open"
        for s in held:                            # the three keep working
            request_ok(s)
        held.pop().close()
        # A slot is free again: a new connection is served.
        wait_until(lambda: _served(m), timeout=5, what="a free connection slot")
    finally:
        for s in held:
            s.close()


def _served(m) -> bool:
    with connect(m.url) as s:
        send(s, get(CONFIG))
        return read_answer(s).status == 200
