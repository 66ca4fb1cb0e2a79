"""Outbound proxies: `proxy: env` takes HTTP_PROXY / HTTPS_PROXY / NO_PROXY from the
environment, an explicit proxy URL takes every request. A tiny forward proxy (absolute-form
requests and CONNECT) runs in the test and records what went through it."""

from __future__ import annotations

import http.client
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from helpers import sha256

REPO = "acme/tiny-model"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
              "trailer", "transfer-encoding", "upgrade"}


class ForwardProxy:
    """An HTTP proxy on 127.0.0.1: forwards absolute-form requests, tunnels CONNECT."""

    def __init__(self):
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                proxy.seen.append((self.command, self.path))
                target = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    conn.request(self.command, path or "/", body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for name, value in resp.getheaders():
                        if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else len(data)
                    self.send_header("Content-Length", str(length or 0))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_HEAD = do_POST = forward

            def do_CONNECT(self):
                proxy.seen.append(("CONNECT", self.path))
                host, port = self.path.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.send_response(200)
                self.end_headers()
                sockets = [self.connection, upstream]
                for _ in range(100000):
                    ready, _, _ = select.select(sockets, [], [], 30)
                    if not ready:
                        break
                    for s in ready:
                        data = s.recv(65536)
                        if not data:
                            upstream.close()
                            self.close_connection = True
                            return
                        (upstream if s is self.connection else self.connection).sendall(data)
                upstream.close()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def targets(self) -> set[str]:
        """`host:port` of every destination that went through the proxy."""
        out = set()
        for method, target in self.seen:
            out.add(target if method == "CONNECT" else urlsplit(target).netloc)
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def forward_proxy():
    p = ForwardProxy()
    yield p
    p.close()


def proxy_env(http_proxy: str, no_proxy: str) -> dict:
    env = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = env[name.lower()] = http_proxy
    env["ALL_PROXY"] = env["all_proxy"] = ""
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def use(m, emu) -> None:
    """Metadata, API JSON, a regular file, an LFS file (hub, then CDN) and a pass-through route."""
    assert m.get(f"/api/models/{REPO}/revision/main").status_code == 200
    assert m.get(f"/api/models/{REPO}/tree/main?recursive=true").status_code == 200
    for path in ("config.json", "model.safetensors"):
        r = m.resolve("GET", REPO, "main", path)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert sha256(r.content) == emu.file(REPO, "main", path)["sha256"]
    assert m.get(f"/api/models/{REPO}/commits/main").status_code == 200


def netloc(url: str) -> str:
    return urlsplit(url).netloc


def assert_all_routes_proxied(proxy: ForwardProxy, emu) -> None:
    assert proxy.targets() == {netloc(emu.hub), netloc(emu.cdn)}
    paths = {urlsplit(t).path for method, t in proxy.seen if method != "CONNECT"}
    assert f"/api/models/{REPO}/commits/main" in paths, "the pass-through went direct"
    assert f"/api/models/{REPO}/revision/main" in paths, "the metadata call went direct"
    assert any(p.startswith("/repos/") for p in paths), "the CDN fill went direct"


def test_proxy_env_sends_every_route_through_the_proxy_from_the_environment(
        own_emu, mirror_factory, forward_proxy):
    m = mirror_factory([{"url": own_emu, "proxy": "env"}], env=proxy_env(forward_proxy.url, ""))
    use(m, own_emu)
    assert_all_routes_proxied(forward_proxy, own_emu)


def test_proxy_env_honours_no_proxy(own_emu, mirror_factory, forward_proxy):
    m = mirror_factory([{"url": own_emu, "proxy": "env"}],
                       env=proxy_env(forward_proxy.url, "example.org, 127.0.0.1"))
    use(m, own_emu)
    assert forward_proxy.seen == []


def test_an_explicit_proxy_is_used_whatever_no_proxy_says(own_emu, mirror_factory, forward_proxy):
    m = mirror_factory([{"url": own_emu, "proxy": forward_proxy.url}],
                       env=proxy_env("http://127.0.0.1:9", "127.0.0.1"))
    use(m, own_emu)
    assert_all_routes_proxied(forward_proxy, own_emu)


def test_without_a_proxy_setting_the_environment_is_ignored(own_emu, mirror_factory, forward_proxy):
    m = mirror_factory(own_emu, env=proxy_env(forward_proxy.url, ""))
    use(m, own_emu)
    assert forward_proxy.seen == []
