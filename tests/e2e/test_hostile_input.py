"""Hostile input on the public port: malformed HTTP/1 framing, over-long heads, methods and
bodies a read-only mirror does not take, encoded path traversal. Every case is sent as raw
bytes; the answer's status is checked, and that the connection is closed where the framing
can no longer be trusted. Nothing refused here may reach the upstream."""

from __future__ import annotations

import pytest

from helpers import KiB
from rawhttp import connect, exchange, get, read_answer, send

CONFIG = "/acme/tiny-model/resolve/main/config.json"


def assert_refused(mirror, data: bytes, status: int, closed: bool = True):
    answer = exchange(mirror.url, data)
    assert answer.status == status, (data[:200], answer)
    if closed:
        assert answer.closed, f"connection left open after {status}: {data[:200]!r}"
    return answer


def assert_still_serving(mirror):
    with connect(mirror.url) as s:
        send(s, get(CONFIG))
        answer = read_answer(s)
    assert answer.status == 200, answer


SMUGGLING = {
    "cl_and_te": b"POST /api/models/acme/tiny-model/paths-info/main HTTP/1.1\r\nHost: m\r\n"
                 b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": b"GET / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
                 b"0\r\n\r\n",
    "duplicate_cl_same": b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    "duplicate_cl_differ": b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
    "cl_list": b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: 1, 1\r\n\r\nx",
    "cl_not_a_number": b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: abc\r\n\r\n",
    "cl_plus": b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: +1\r\n\r\nx",
    "cl_negative": b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: -1\r\n\r\n",
    "te_not_chunked": b"POST /x HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
    "te_space_before_colon": b"POST /x HTTP/1.1\r\nHost: m\r\nTransfer-Encoding : chunked\r\n\r\n",
    "te_in_http10": b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: m\r\nX-A: one\r\n two\r\n\r\n",
    "obs_fold_tab": b"GET / HTTP/1.1\r\nHost: m\r\nX-A: one\r\n\ttwo\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\nHost: m\r\nX-A: a\x00b\r\n\r\n",
    "nul_in_name": b"GET / HTTP/1.1\r\nHost: m\r\nX\x00A: b\r\n\r\n",
    "control_in_value": b"GET / HTTP/1.1\r\nHost: m\r\nX-A: a\x1bb\r\n\r\n",
    "bare_lf": b"GET / HTTP/1.1\nHost: m\n\n",
    "bare_lf_mixed": b"GET / HTTP/1.1\r\nHost: m\nX-A: b\r\n\r\n",
    "bare_cr": b"GET / HTTP/1.1\r\nHost: m\rX-A: b\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no_host": b"GET / HTTP/1.1\r\n\r\n",
    "header_without_colon": b"GET / HTTP/1.1\r\nHost: m\r\nX-A b\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_ambiguous_framing_is_refused_with_400_and_closed(shared_mirror, emu, case):
    answer = assert_refused(shared_mirror, SMUGGLING[case], 400)
    assert answer.headers.get("connection", "").lower() == "close"
    assert "x-error-message" in answer.headers
    assert upstream_saw(emu, "paths-info", "POST") == []


GARBAGE = {
    "space_in_target": b"GET /a b HTTP/1.1\r\nHost: m\r\n\r\n",
    "double_space": b"GET  / HTTP/1.1\r\nHost: m\r\n\r\n",
    "control_in_target": b"GET /a\x01b HTTP/1.1\r\nHost: m\r\n\r\n",
    "utf8_in_target": "GET /é HTTP/1.1\r\nHost: m\r\n\r\n".encode(),
    "no_version": b"GET /\r\nHost: m\r\n\r\n",
    "bad_version": b"GET / HTTP/1.x\r\nHost: m\r\n\r\n",
    "lowercase_version": b"GET / http/1.1\r\nHost: m\r\n\r\n",
    "bad_method": b"G(T / HTTP/1.1\r\nHost: m\r\n\r\n",
    "relative_target": b"GET index.html HTTP/1.1\r\nHost: m\r\n\r\n",
    "just_words": b"HELLO\r\n\r\n",
    "tls_hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)) + b"\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_garbage_request_lines_are_refused_with_400(shared_mirror, case):
    assert_refused(shared_mirror, GARBAGE[case], 400)


def test_an_http2_request_line_over_http1_is_505(shared_mirror):
    assert_refused(shared_mirror, b"GET / HTTP/2.0\r\nHost: m\r\n\r\n", 505)


def test_an_over_long_request_line_is_414(shared_mirror):
    path = "/acme/tiny-model/resolve/main/" + "a" * (9 * KiB)
    assert_refused(shared_mirror, get(path), 414)
    # Refused as soon as the line is too long, before it even ends.
    assert_refused(shared_mirror, b"GET /" + b"a" * (9 * KiB), 414)


def test_a_request_line_just_under_the_limit_is_routed(shared_mirror):
    path = "/acme/tiny-model/resolve/main/" + "a" * 200 + "/" + "b" * 200
    answer = exchange(shared_mirror.url, get(path))
    assert answer.status == 404, answer


@pytest.mark.parametrize("size,count,status", [
    (9 * KiB, 1, 431),          # one header over 8 KiB
    (4 * KiB, 20, 431),         # 80 KiB of headers, each under 8 KiB
    (10, 101, 431),             # too many headers
    (1000 * KiB, 1, 431),       # a 1 MB header: 431 from hubcache, not Pingora's 400
])
def test_over_large_headers_are_431(shared_mirror, size, count, status):
    headers = "".join(f"X-Pad-{i}: {'v' * size}\r\n" for i in range(count))
    assert_refused(shared_mirror, get("/", extra=headers), status)


def test_headers_just_under_the_limits_are_accepted(shared_mirror):
    headers = "".join(f"X-Pad-{i}: {'v' * (7 * KiB)}\r\n" for i in range(8))
    with connect(shared_mirror.url) as s:
        send(s, get(CONFIG, extra=headers))
        answer = read_answer(s)
    assert answer.status == 200, answer


@pytest.mark.parametrize("method,extra,body", [
    ("GET", "Content-Length: 5\r\n", b"hello"),
    ("HEAD", "Content-Length: 5\r\n", b"hello"),
    ("GET", "Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
])
def test_reads_with_a_body_are_refused_with_400_and_closed(shared_mirror, method, extra, body):
    answer = assert_refused(shared_mirror, get(CONFIG, extra=extra, method=method) + body, 400)
    assert "must not carry a body" in answer.headers.get("x-error-message", "")


@pytest.mark.parametrize("method,path", [
    ("PUT", CONFIG),
    ("DELETE", "/api/repos/delete"),
    ("PATCH", "/api/models/acme/tiny-model"),
    ("POST", "/api/repos/create"),
    ("POST", CONFIG),
    ("OPTIONS", "/"),
    ("TRACE", "/"),
    ("PROPFIND", "/"),
])
def test_methods_the_mirror_does_not_serve_are_405(shared_mirror, emu, method, path):
    extra = "Content-Length: 2\r\n" if method in ("PUT", "POST", "PATCH") else ""
    body = b"{}" if extra else b""
    answer = assert_refused(shared_mirror, get(path, extra=extra, method=method) + body, 405)
    assert answer.headers.get("allow") == "GET, HEAD"
    assert upstream_saw(emu, *TELLTALES) == []


def test_paths_info_post_still_works(shared_mirror):
    body = b"paths=config.json&expand=false"
    data = get("/api/models/acme/tiny-model/paths-info/main", method="POST",
               extra=f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n")
    with connect(shared_mirror.url) as s:
        send(s, data + body)
        answer = read_answer(s)
    assert answer.status == 200, answer
    assert b"config.json" in answer.body


def test_pipelined_smuggled_request_never_reaches_the_upstream(shared_mirror, emu):
    smuggled = (b"GET / HTTP/1.1\r\nHost: m\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\nGET /api/whoami-v2 HTTP/1.1\r\nHost: m\r\n\r\n")
    assert_refused(shared_mirror, smuggled, 400)
    assert upstream_saw(emu, "whoami") == []


def test_the_mirror_keeps_serving_after_hostile_input(shared_mirror):
    for data in list(SMUGGLING.values())[:5] + list(GARBAGE.values())[:5]:
        exchange(shared_mirror.url, data)
    assert_still_serving(shared_mirror)
    assert shared_mirror.running


# ------------------------------------------------------------------------------------------
# paths: every encoded form of '..', '.', backslash, NUL, over-long names
# ------------------------------------------------------------------------------------------

HOSTILE_PATHS = [
    "/acme/tiny-model/resolve/main/../../../etc/passwd",
    "/acme/tiny-model/resolve/main/./config.json",
    "/acme/tiny-model/resolve/main/%2e%2e/%2e%2e/etc/passwd",
    "/acme/tiny-model/resolve/main/%2E%2E/config.json",
    "/acme/tiny-model/resolve/main/%2e./config.json",
    "/acme/tiny-model/resolve/main/.%2E/config.json",
    "/acme/tiny-model/resolve/main/%2e/config.json",
    "/acme/tiny-model/resolve/main/..%2F..%2Fetc%2Fpasswd",
    "/acme/tiny-model/resolve/main/%252e%252e/%252e%252e/config.json",
    "/acme/tiny-model/resolve/main/%252E%252E%252Fconfig.json",
    "/acme/tiny-model/resolve/main/%25252e%25252e/config.json",
    "/acme/tiny-model/resolve/main/..%5c..%5cconfig.json",
    "/acme/tiny-model/resolve/main/%5C",
    "/acme/tiny-model/resolve/main/%255c",
    "/acme/tiny-model/resolve/main/%00.txt",
    "/acme/tiny-model/resolve/main/config.json%00.txt",
    "/acme/tiny-model/resolve/main/%2500",
    "/acme/tiny-model/resolve/main/%c0%ae%c0%ae/config.json",
    "/acme/tiny-model/resolve/main/%ZZ",
    "/acme/tiny-model/resolve/main/" + "a" * 300,
    "/acme/tiny-model/resolve/main/" + "%C3%A9" * 130,
    "/acme/tiny-model/resolve/%2e%2e/config.json",
    "/api/models/acme/tiny-model/tree/main/%2E%2E%2F%2E%2E",
    "/api/models/%2e%2e/%2e%2e/tree/main",
    "/api/whoami-v2/..%2F..%2Fadmin",
    "/api/%2e%2e/%2e%2e/admin",
    "/api/models/acme/tiny-model/%5c..%5c..",
    "/..%2f..%2fetc/passwd",
    "/%2e%2e/",
]


@pytest.mark.parametrize("raw_path", HOSTILE_PATHS)
def test_hostile_paths_are_refused_before_reaching_the_upstream(shared_mirror, emu, raw_path):
    for method in ("GET", "HEAD"):
        answer = exchange(shared_mirror.url, get(raw_path, method=method))
        assert answer.status == 400, (method, raw_path, answer)
        assert b"root:" not in answer.body
    assert upstream_saw(emu, *TELLTALES) == []


def test_names_with_dots_and_encoded_characters_still_resolve(shared_mirror, emu):
    # '.gitattributes' and a name needing escapes are real files, not traversal.
    for path in ("/acme/tiny-model/resolve/main/.gitattributes",
                 "/acme/tiny-model/resolve/refs%2Fpr%2F1/config.json"):
        with connect(shared_mirror.url) as s:
            send(s, get(path))
            answer = read_answer(s)
        assert answer.status == 200, (path, answer)


def upstream_saw(emu, *needles: str) -> list[str]:
    """The requests the upstream (the emulator) received whose method+path contains a needle."""
    return [f"{e['method']} {e['path']}" for e in emu.stats()["recent"]
            if any(n in f"{e['method']} {e['path']}" for n in needles)]


# What none of the refused requests may carry upstream.
TELLTALES = ("..", "%2e", "%2E", "%5c", "%5C", "%00", "%25", "%c0", "%ZZ", "aaaaaaaaaa", "%C3%A9%C3%A9",
             "passwd", "admin", "whoami", "/api/repos", "PUT ", "DELETE ", "PATCH ", "OPTIONS ",
             "TRACE ", "PROPFIND ", "POST /x", "POST /acme")
