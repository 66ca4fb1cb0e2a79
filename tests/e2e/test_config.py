"""`hubcache check-config` and `serve` on invalid configs: non-zero exit, the key path named."""

from __future__ import annotations

import subprocess

import pytest

from helpers import free_port

INVALID = [
    # (name, YAML, text that must appear in the message)
    ("unknown top-level key", "listen: 127.0.0.1:8090\nlisten_port: 8090\n", "listen_port"),
    ("unknown nested key", "fill:\n  conection_total: 3\n", "fill.conection_total"),
    ("bare-number duration", "revision_ttl: 60\n", "revision_ttl"),
    ("fractional duration", "auth_ttl: 1.5h\n", "auth_ttl"),
    ("unknown duration unit", "revision_ttl: 5min\n", "revision_ttl"),
    ("ftp upstream", "upstreams:\n  - url: ftp://example.org/hf\n", "upstreams[0].url"),
    ("second upstream bad", "upstreams:\n  - url: http://127.0.0.1:1\n  - url: ftp://x\n", "upstreams[1].url"),
    ("upstream without url", "upstreams:\n  - timeout: 10s\n", "upstreams[0].url"),
    ("empty upstreams online", "upstreams: []\n", "upstreams"),
    ("listen host name", "listen: localhost:8090\n", "listen"),
    ("block size not a power of two", "cache:\n  block_size: 7MiB\n", "cache.block_size"),
    ("bad size unit", "fill:\n  segment: 8mib\n", "fill.segment"),
    ("bad boolean", "offline: maybe\n", "offline"),
    ("invalid YAML", "listen: [127.0.0.1\n", ""),
]


@pytest.mark.parametrize("name,text,needle", INVALID, ids=[c[0] for c in INVALID])
def test_check_config_rejects_invalid_files_naming_the_key(hubcache_bin, tmp_path, name, text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    p = subprocess.run([hubcache_bin, "check-config", str(cfg)], capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode != 0, f"accepted an invalid config ({name}): {out}"
    assert needle in out, f"message does not name {needle!r}: {out}"
    assert "panicked" not in out


VALID = [
    ("empty file", ""),
    ("minimal", "upstreams:\n  - url: http://127.0.0.1:1234\n"),
    ("full", """\
listen: 127.0.0.1:18090
public_url: http://mirror.internal:8090/hf/
offline: false
revision_ttl: 1h30m
auth_ttl: 10m
cache:
  dir: ./some-cache
  block_size: 16MiB
  durability: fsync
upstreams:
  - url: http://127.0.0.1:1234/
    timeout: 5s
  - url: https://hf-mirror.com
    proxy: http://proxy.corp:3128
fill: { mode: on_demand, segment: 64MiB, connections_per_file: 4, connections_total: 16, read_ahead: 0, background_fills: 2 }
server: { threads: 2, grace_period: 1s, pid_file: /tmp/x.pid, upgrade_sock: /tmp/x.sock }
"""),
    ("offline without upstreams", "offline: true\nupstreams: []\n"),
    ("null values mean defaults", "public_url: ~\nrevision_ttl:\n"),
]


@pytest.mark.parametrize("name,text", VALID, ids=[c[0] for c in VALID])
def test_check_config_accepts_valid_files(hubcache_bin, tmp_path, name, text):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(text)
    p = subprocess.run([hubcache_bin, "check-config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


def test_check_config_missing_file_fails(hubcache_bin, tmp_path):
    p = subprocess.run([hubcache_bin, "check-config", str(tmp_path / "nope.yaml")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "nope.yaml" in p.stdout + p.stderr


def test_serve_refuses_an_invalid_config(hubcache_bin, tmp_path):
    cfg = tmp_path / "bad.yaml"
    port = free_port()
    cfg.write_text(f"listen: 127.0.0.1:{port}\nrevision_ttl: 60\n"
                   f"server: {{pid_file: {tmp_path}/x.pid, upgrade_sock: {tmp_path}/x.sock}}\n")
    p = subprocess.Popen([hubcache_bin, "serve", "--config", str(cfg)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=10)
        pytest.fail("hubcache serve kept running with an invalid config")
    assert p.returncode != 0
    assert "revision_ttl" in out
