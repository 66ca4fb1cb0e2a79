"""Plain HTTP download tools through the mirror: `curl -C -` and `wget -c` resuming a partial
file, and `aria2c -x 8` splitting one file over eight connections. Each runs cold (the mirror has
never seen the file) and warm (no file byte moves upstream), and the result must equal the
emulator's bytes. scripts/test installs the tools (scripts/lib/setup.sh, ensure_download_tools).

The tools get the mirror's resolve URL and no proxy settings: the mirror answers resolve URLs
itself (200/206, never a redirect), so they never learn another address.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from helpers import file_sha256, resolve_path, wait_until

LFS_FILE = ("acme/tiny-model", "main", "model.safetensors")        # 5 MiB, 302 to the CDN upstream
REGULAR_FILE = ("acme/tiny-model", "main", "tokenizer.json")       # ~20 KiB, 307 to resolve-cache upstream
BIG_FILE = ("acme/big-model", "main", "big.bin")                   # 48 MiB (the session emulator)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/test installs it (scripts/lib/setup.sh)")
    return path


def tool_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


def run_tool(args: list[str]) -> subprocess.CompletedProcess:
    p = subprocess.run(args, env=tool_env(), capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"{args[0]} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def resume(name: str, url: str, dest) -> tuple[int, int]:
    """Resume `dest` from `url` with curl -C - or wget -c -> (HTTP status, body bytes received)."""
    if name == "curl":
        p = run_tool([tool("curl"), "--silent", "--show-error", "--fail", "--location", "--continue-at", "-",
                      "--output", str(dest), "--write-out", "%{http_code} %{size_download} %{url_effective}",
                      url])
        status, size, effective = p.stdout.split(" ", 2)
        assert effective == url, f"curl ended at {effective}, not at the mirror"
        return int(status), int(size)
    p = run_tool([tool("wget"), "--continue", "--server-response", "--no-verbose", "--output-document",
                  str(dest), url])
    statuses = [int(s) for s in re.findall(r"^\s*HTTP/1\.[01] (\d{3})", p.stderr, re.M)]
    assert len(statuses) == 1, f"wget saw {statuses} (a redirect?)\n{p.stderr[-2000:]}"
    lengths = re.findall(r"^\s*Content-Length: (\d+)", p.stderr, re.M | re.I)
    return statuses[0], int(lengths[-1])


def upstream_file_bytes(emu) -> int:
    stats = emu.stats()
    return stats["cdn_bytes"] + stats["hub_file_bytes"]


def assert_no_file_bytes_upstream(emu) -> None:
    stats = emu.stats()
    assert stats["cdn_bytes"] == 0 and stats["hub_file_bytes"] == 0, \
        f"a warm download fetched file bytes upstream: {[e for e in stats['recent'] if e['bytes']]}"


@pytest.mark.parametrize("name", ["curl", "wget"])
@pytest.mark.parametrize("repo,rev,path", [LFS_FILE, REGULAR_FILE], ids=["lfs", "regular"])
def test_resume_a_partial_download_cold_then_warm(name, repo, rev, path, emu, mirror_factory, tmp_path):
    mirror = mirror_factory(emu)
    url = mirror.url + resolve_path(repo, rev, path)
    entry, data = emu.file(repo, rev, path), emu.file_bytes(repo, rev, path)
    for phase, offset in (("cold", len(data) // 3 + 1), ("warm", len(data) * 2 // 3 + 7)):
        emu.reset()
        dest = tmp_path / f"{phase}-{os.path.basename(path)}"
        dest.write_bytes(data[:offset])
        status, received = resume(name, url, dest)
        assert (status, received) == (206, len(data) - offset), \
            f"{phase}: {name} did not resume at {offset} (status {status}, {received} bytes)"
        assert file_sha256(dest) == entry["sha256"], f"{phase}: {name} resumed into different bytes"
        if phase == "cold":
            # the mirror completes the file in the background (fill.mode complete): wait for
            # the bytes before `offset` too, so that none arrive during the warm phase
            wait_until(lambda: upstream_file_bytes(emu) >= len(data), 30, what="the mirror to complete the file")
            fetched = upstream_file_bytes(emu)
            assert fetched <= len(data) * 1.02, f"the cold resume fetched {fetched} bytes upstream"
        else:
            assert_no_file_bytes_upstream(emu)


def test_aria2c_eight_connections_cold_then_warm(emu, mirror_factory, tmp_path):
    mirror = mirror_factory(emu)
    repo, rev, path = BIG_FILE
    entry = emu.file(repo, rev, path)
    url = mirror.url + resolve_path(repo, rev, path)
    for phase in ("cold", "warm"):
        emu.reset()
        log_start = mirror.log_path.stat().st_size
        run_tool([tool("aria2c"), "--max-connection-per-server=8", "--split=8", "--min-split-size=1M",
                  "--file-allocation=none", "--allow-overwrite=true", "--auto-file-renaming=false",
                  "--console-log-level=warn", "--summary-interval=0", "--max-tries=1",
                  "--dir", str(tmp_path), "--out", f"{phase}.bin", url])
        assert file_sha256(tmp_path / f"{phase}.bin") == entry["sha256"], f"{phase}: aria2c got different bytes"
        with open(mirror.log_path, "rb") as f:
            f.seek(log_start)
            log = f.read().decode("utf-8", "replace")
        # Access-log lines: "GET resolve <repo> <path> <status> ..." (docs/admin.md#logs).
        ranged = re.findall(rf"\] GET resolve \S+ {re.escape(resolve_path(repo, rev, path))} 206 ", log)
        assert len(ranged) >= 4, f"{phase}: aria2c made {len(ranged)} ranged requests, expected several"
        if phase == "cold":
            fetched = emu.cdn_bytes_for(entry["sha256"])
            assert fetched <= entry["size"] * 1.02, f"eight connections fetched {fetched} bytes upstream"
        else:
            assert_no_file_bytes_upstream(emu)
