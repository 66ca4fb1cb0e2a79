"""TLS and HTTP/2 at the edge (issue 16): HTTPS on `tls.listen` with a certificate signed by a
private CA made at run time, trusted by the clients (SSL_CERT_FILE / REQUESTS_CA_BUNDLE / curl
--cacert); huggingface_hub, the `hf` CLI and curl over HTTP/2 get byte-exact files; the
certificate is re-read on reload while a download in flight continues; bad pairs and plain HTTP
on the TLS port fail cleanly."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests

from helpers import (MiB, VENV_BIN, client_env, expected_files, free_port, pid_listens_on,
                     resolve_path, run_client, stop_pid, stop_process, tail, tree_files,
                     wait_until)
from tls_certs import PrivateCa, der, served_certificate

TINY = ("acme/tiny-model", "main", "config.json")
LFS = ("acme/tiny-model", "main", "model.safetensors")
BIG = ("acme/big-model", "main", "big.bin")


@pytest.fixture
def ca(tmp_path) -> PrivateCa:
    return PrivateCa(tmp_path / "pki")


class Https:
    """A mirror with `tls` on, and its HTTPS base URL."""

    def __init__(self, mirror, port: int, ca: PrivateCa):
        self.mirror, self.port, self.ca = mirror, port, ca
        self.url = f"https://127.0.0.1:{port}"
        wait_until(lambda: pid_listens_on(mirror.proc.pid, port), 10, what="the TLS listener")

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        kw.setdefault("allow_redirects", False)
        return requests.get(self.url + path, verify=str(self.ca.cert), **kw)

    def trust_env(self) -> dict:
        return {"SSL_CERT_FILE": str(self.ca.cert), "REQUESTS_CA_BUNDLE": str(self.ca.cert),
                "CURL_CA_BUNDLE": str(self.ca.cert)}


def https_mirror(mirror_factory, upstream, ca: PrivateCa, name: str = "server", **overrides) -> Https:
    cert, key = ca.server_pair(name)
    port = free_port()
    m = mirror_factory(upstream, tls={"listen": f"127.0.0.1:{port}", "cert": str(cert),
                                      "key": str(key)}, **overrides)
    return Https(m, port, ca)


def curl(https: Https, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--cacert", str(https.ca.cert), "--noproxy", "*", *args],
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------------------------
# Real clients over HTTPS
# --------------------------------------------------------------------------------------------

def test_hf_hub_download_and_snapshot_download_over_https_are_byte_exact(emu, mirror_factory, ca,
                                                                           hf_home):
    https = https_mirror(mirror_factory, emu, ca)
    ops = [{"op": "download", "repo_id": TINY[0], "filename": TINY[2]},
           {"op": "download", "repo_id": LFS[0], "filename": LFS[2]},
           {"op": "snapshot", "repo_id": "acme/tiny-model"},
           {"op": "snapshot", "repo_id": "acme/tiny-dataset", "repo_type": "dataset"}]
    results = run_client(https.url, hf_home, ops, extra_env=https.trust_env())
    for result in results:
        assert result["ok"], f"{result.get('error')}: {result.get('message')}"
    assert results[0]["sha256"] == emu.file(*TINY)["sha256"]
    assert results[1]["sha256"] == emu.file(*LFS)["sha256"]
    assert results[1]["size"] == emu.file(*LFS)["size"]
    assert results[2]["files"] == expected_files(emu, "acme/tiny-model", "main")
    assert results[3]["files"] == expected_files(emu, "acme/tiny-dataset", "main")


def test_a_client_that_does_not_trust_the_ca_refuses_the_mirror(emu, mirror_factory, ca, hf_home):
    https = https_mirror(mirror_factory, emu, ca)
    [result] = run_client(https.url, hf_home, [{"op": "download", "repo_id": TINY[0],
                                                "filename": TINY[2]}])
    assert not result["ok"]
    assert "certificate" in (result.get("message") or "").lower() or "SSL" in json.dumps(result), result
    assert https.get("/").status_code == 200, "the mirror keeps serving trusting clients"


def test_hf_cli_download_over_https_is_byte_exact(emu, mirror_factory, ca, tmp_path, hf_home):
    https = https_mirror(mirror_factory, emu, ca)
    dest = tmp_path / "local-model"
    env = client_env(https.url, hf_home, extra=https.trust_env())
    p = subprocess.run([str(VENV_BIN / "hf"), "download", "acme/tiny-model", "--local-dir", str(dest)],
                       env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert tree_files(dest) == expected_files(emu, "acme/tiny-model", "main")


def test_curl_negotiates_http2_and_get_range_and_head_behave_as_on_plain_http(emu, mirror_factory,
                                                                                ca, tmp_path):
    https = https_mirror(mirror_factory, emu, ca)
    path = resolve_path(*LFS)
    want = emu.file_bytes(*LFS)
    body = tmp_path / "body"
    p = curl(https, "--http2", "-L", "-o", str(body), "-w", "%{http_version} %{http_code}",
             https.url + path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "2 200", p.stdout
    assert body.read_bytes() == want

    p = curl(https, "--http2", "-L", "-r", "100-4195", "-o", str(body), "-w",
             "%{http_version} %{http_code}", https.url + path)
    assert p.stdout.decode() == "2 206", p.stdout
    assert body.read_bytes() == want[100:4196]

    p = curl(https, "--http2", "-I", "-L", https.url + path)
    assert p.returncode == 0, p.stderr
    h2_head = p.stdout.decode().lower()
    assert h2_head.startswith("http/2 200"), h2_head
    plain = https.mirror.resolve("HEAD", *LFS)
    assert plain.status_code == 200
    for name in ("content-length", "etag", "x-repo-commit"):
        assert f"{name}: {plain.headers[name]}".lower() in h2_head, (name, h2_head)

    # HTTP/1.1 over TLS is still offered (ALPN fallback).
    p = curl(https, "--http1.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             https.url + resolve_path(*TINY))
    assert p.stdout.decode() == "1.1 200", p.stdout


def test_links_the_mirror_writes_over_tls_say_https_unless_public_url_is_set(emu, mirror_factory, ca):
    https = https_mirror(mirror_factory, emu, ca)
    tree = "/api/models/acme/many-files/tree/main?recursive=true"
    link = https.get(tree).headers.get("link", "")
    assert link.startswith(f"<{https.url}/api/models/acme/many-files/tree/"), link
    plain = https.mirror.get(tree).headers.get("link", "")
    assert plain.startswith(f"<{https.mirror.url}/"), plain
    home = https.get("/").text
    assert f"HF_ENDPOINT={https.url}" in home
    # The same over HTTP/2.
    p = curl(https, "--http2", "-D", "-", "-o", "/dev/null", https.url + tree)
    assert f"link: <{https.url}/api/models/acme/many-files/tree/" in p.stdout.decode().lower()

    https.mirror.write_config(public_url="http://mirror.example:8090")
    assert https.mirror.command("reload", "--config", str(https.mirror.config_path)).returncode == 0
    assert https.get(tree).headers["link"].startswith("<http://mirror.example:8090/api/")


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

def test_plain_http_on_the_tls_port_gets_a_clean_400_and_the_mirror_keeps_serving(emu,
                                                                                   mirror_factory, ca):
    https = https_mirror(mirror_factory, emu, ca)
    with socket.create_connection(("127.0.0.1", https.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"Connection: close" in head
    assert b"https://" in body
    assert https.mirror.running
    assert https.get("/").status_code == 200


def test_over_max_connections_http1_over_tls_gets_503_and_http2_is_closed(emu, mirror_factory, ca):
    https = https_mirror(mirror_factory, emu, ca, server={"max_connections": 1})
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    ctx.set_alpn_protocols(["http/1.1"])
    hold = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https.port), timeout=10),
                           server_hostname="127.0.0.1")
    try:
        # The held connection takes the only slot once its handshake is done.
        wait_until(lambda: curl(https, "--http1.1", "-o", "/dev/null", "-w", "%{http_code}",
                                https.url + "/").stdout == b"503", 10, what="the slot to be taken")
        p = curl(https, "--http2", "-o", "/dev/null", "-w", "%{http_code}", https.url + "/")
        assert p.returncode != 0 and p.stdout in (b"000", b""), (p.returncode, p.stdout, p.stderr)
    finally:
        hold.close()
    wait_until(lambda: curl(https, "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                            https.url + "/").stdout == b"2 200", 10, what="the slot to be given back")
    assert https.mirror.running


def test_bad_pairs_are_refused_at_start_naming_the_key(emu, mirror_factory, ca, tmp_path, hubcache_bin):
    cert, key = ca.server_pair("good")
    _, other_key = ca.server_pair("other")

    def check(tls: dict, plain: str | None = "127.0.0.1:1") -> subprocess.CompletedProcess:
        f = tmp_path / "c.yaml"
        f.write_text(json.dumps({"listen": plain, "offline": True, "tls": tls}))
        return subprocess.run([hubcache_bin, "check-config", str(f)], capture_output=True,
                              text=True, timeout=30)

    ok = check({"listen": "127.0.0.1:2", "cert": str(cert), "key": str(key)})
    assert ok.returncode == 0, ok.stderr
    p = check({"listen": "127.0.0.1:2", "cert": str(cert), "key": str(other_key)})
    assert p.returncode != 0 and "tls.key" in p.stderr and "does not match" in p.stderr, p.stderr
    p = check({"listen": "127.0.0.1:2", "cert": str(tmp_path / "nope.crt"), "key": str(key)})
    assert p.returncode != 0 and "tls.cert" in p.stderr and "nope.crt" in p.stderr, p.stderr
    p = check({"listen": "127.0.0.1:2", "cert": str(key), "key": str(key)})
    assert p.returncode != 0 and "tls.cert" in p.stderr, p.stderr
    p = check(None, plain=None)
    assert p.returncode != 0 and "listen" in p.stderr and "needs tls" in p.stderr, p.stderr

    # `serve` refuses to start with a bad pair, saying why.
    with pytest.raises(RuntimeError, match="tls.key"):
        mirror_factory(emu, tls={"listen": f"127.0.0.1:{free_port()}", "cert": str(cert),
                                 "key": str(other_key)})


def test_an_expired_certificate_is_a_warning_and_still_served(emu, mirror_factory, ca, tmp_path,
                                                                hubcache_bin):
    cert, key = ca.expired_pair("expired")
    f = tmp_path / "c.yaml"
    f.write_text(json.dumps({"offline": True, "tls": {"listen": "127.0.0.1:2", "cert": str(cert),
                                                      "key": str(key)}}))
    p = subprocess.run([hubcache_bin, "check-config", str(f)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert "warning: tls.cert" in p.stderr and "expired on" in p.stderr, p.stderr
    port = free_port()
    m = mirror_factory(emu, tls={"listen": f"127.0.0.1:{port}", "cert": str(cert), "key": str(key)})
    wait_until(lambda: pid_listens_on(m.proc.pid, port), 10, what="the TLS listener")
    assert "expired on" in m.log_tail(50)
    # Served as it is: a client that checks dates refuses it.
    with pytest.raises(requests.exceptions.SSLError, match="expired"):
        requests.get(f"https://127.0.0.1:{port}/", verify=str(ca.cert), timeout=10)


def test_listen_null_serves_https_only(emu, ca, tmp_path, hubcache_bin, hf_home):
    cert, key = ca.server_pair("only")
    port = free_port()
    config = tmp_path / "only.yaml"
    config.write_text(json.dumps({
        "listen": None, "cache": {"dir": str(tmp_path / "cache")},
        "upstreams": [{"url": emu.hub, "trust": "origin", "timeout": "10s"}],
        "admin": {"listen": None},
        "server": {"threads": 2, "grace_period": "1s", "runtime_dir": str(tmp_path / "run")},
        "tls": {"listen": f"127.0.0.1:{port}", "cert": str(cert), "key": str(key)}}))
    log = open(tmp_path / "only.log", "wb")
    proc = subprocess.Popen([hubcache_bin, "serve", "--config", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_until(lambda: proc.poll() is not None or pid_listens_on(proc.pid, port), 20,
                   what="the TLS listener")
        assert proc.poll() is None, tail(tmp_path / "only.log")
        listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        ours = [line for line in listening.splitlines() if f"pid={proc.pid}," in line]
        assert len(ours) == 1 and f"127.0.0.1:{port}" in ours[0], ours
        r = requests.get(f"https://127.0.0.1:{port}{resolve_path(*TINY)}", verify=str(ca.cert),
                         timeout=30)
        assert r.status_code == 200 and r.content == emu.file_bytes(*TINY)
    finally:
        stop_process(proc)
        log.close()


# --------------------------------------------------------------------------------------------
# Certificate renewal
# --------------------------------------------------------------------------------------------

def test_a_renewed_certificate_reaches_new_connections_while_a_download_continues(
        emu_factory, mirror_factory, ca):
    slow = emu_factory(big_size=24 * MiB, extra=("--cdn-rate", str(6 * MiB)))
    https = https_mirror(mirror_factory, slow, ca, fill={"segment": "4MiB", "connections_per_file": 1},
                         cache={"block_size": "1MiB"})
    tls = https.mirror.overrides["tls"]
    first = der(tls["cert"])
    assert served_certificate(https.port, ca.cert) == first
    big = slow.file(*BIG)
    received: list = []

    def download():
        h = hashlib.sha256()
        n = 0
        with requests.get(https.url + resolve_path(*BIG), verify=str(ca.cert), stream=True,
                          timeout=60) as r:
            r.raise_for_status()
            for chunk in r.iter_content(256 << 10):
                h.update(chunk)
                n += len(chunk)
        received.append((n, h.hexdigest()))

    t = threading.Thread(target=download)
    t.start()
    try:
        wait_until(lambda: slow.cdn_bytes_for(big["sha256"]) > 0, 20, what="the download to start")
        # A bad pair (the key of another certificate) is refused; the old one keeps serving.
        _, wrong_key = ca.server_pair("wrong")
        renewed_cert, renewed_key = ca.server_pair("renewed", days=2)
        os.replace(wrong_key, tls["key"])
        p = https.mirror.command("reload", "--config", str(https.mirror.config_path))
        assert p.returncode == 1 and "tls.key" in p.stdout + p.stderr, p.stdout + p.stderr
        assert served_certificate(https.port, ca.cert) == first
        # The renewed pair is written in place (as an ACME client does) and SIGHUP picks it up.
        os.replace(renewed_key, tls["key"])
        os.replace(renewed_cert, tls["cert"])
        os.kill(https.mirror.proc.pid, signal.SIGHUP)
        renewed = der(tls["cert"])
        wait_until(lambda: served_certificate(https.port, ca.cert) == renewed, 10,
                   what="new connections to get the renewed certificate")
        assert t.is_alive(), "the download should still be running across the renewal"
    finally:
        t.join(timeout=90)
    assert received == [(big["size"], big["sha256"])]
    assert "tls: now serving the certificate of CN=renewed" in https.mirror.log_tail(200)


def test_watch_config_picks_up_a_certificate_renewed_in_place(emu, mirror_factory, ca):
    https = https_mirror(mirror_factory, emu, ca, watch_config=True)
    tls = https.mirror.overrides["tls"]
    assert served_certificate(https.port, ca.cert) == der(tls["cert"])
    cert, key = ca.server_pair("renewed-by-acme", days=2)
    os.replace(key, tls["key"])
    os.replace(cert, tls["cert"])
    renewed = der(tls["cert"])
    wait_until(lambda: served_certificate(https.port, ca.cert) == renewed, 15,
               what="watch_config to install the renewed certificate")
    assert https.get(resolve_path(*TINY)).content == emu.file_bytes(*TINY)


def test_a_binary_upgrade_hands_the_tls_port_over_with_the_certificate_on_disk(emu, mirror_factory,
                                                                                 ca):
    https = https_mirror(mirror_factory, emu, ca, server={"grace_period": "1h"})
    old = https.mirror.serving_pid()
    tls = https.mirror.overrides["tls"]
    cert, key = ca.server_pair("after-upgrade")
    os.replace(key, tls["key"])
    os.replace(cert, tls["cert"])
    p = https.mirror.command("upgrade", "--config", str(https.mirror.config_path))
    new = https.mirror.serving_pid()
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        assert new != old and pid_listens_on(new, https.port)
        https.mirror.proc.wait(30)
        assert served_certificate(https.port, ca.cert) == der(tls["cert"])
        assert https.get(resolve_path(*TINY)).content == emu.file_bytes(*TINY)
    finally:
        stop_pid(new)
