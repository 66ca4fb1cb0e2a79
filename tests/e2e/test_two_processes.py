"""Two hubcache processes on one cache directory (issue 4): as during a graceful binary
upgrade, when the old and the new process run side by side. They must never corrupt each
other's files nor fetch the same block twice, and an upgrade must not drop a download.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import requests

from helpers import MiB, pid_listens_on, stop_process, stream_sha256, wait_until

BIG = ("acme/big-model", "main", "big.bin")


def big_url(mirror) -> str:
    return f"{mirror.url}/acme/big-model/resolve/main/big.bin"


def test_two_processes_sharing_a_cache_fetch_each_block_once(emu_factory, mirror_factory, tmp_path):
    emu = emu_factory(big_size=32 * MiB, extra=("--cdn-rate", str(16 * MiB)))
    cache = tmp_path / "shared-cache"
    settings = {"cache": {"block_size": "1MiB"}, "fill": {"segment": "4MiB"}}
    first = mirror_factory(emu, cache_dir=cache, **settings)
    second = mirror_factory(emu, cache_dir=cache, **settings)
    entry = emu.file(*BIG)
    results: list = []
    threads = [threading.Thread(target=lambda m=m: results.append(stream_sha256(big_url(m))))
               for m in (first, second, first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert len(results) == 4
    for status, sha, read in results:
        assert (status, sha, read) == (200, entry["sha256"], entry["size"])
    fetched = emu.cdn_bytes_for(entry["sha256"])
    assert fetched <= entry["size"] * 1.02, f"two processes fetched {fetched} bytes of a {entry['size']}-byte file"
    # Each process sees the other's blocks: a third download from either moves nothing.
    before = emu.cdn_bytes_for(entry["sha256"])
    assert stream_sha256(big_url(second))[1] == entry["sha256"]
    assert emu.cdn_bytes_for(entry["sha256"]) == before


def test_graceful_upgrade_finishes_the_download_in_flight_and_hands_over_the_port(
        emu_factory, mirror_factory, hubcache_bin):
    emu = emu_factory(big_size=24 * MiB, extra=("--cdn-rate", str(8 * MiB)))
    old = mirror_factory(emu, server={"grace_period": "30s"})
    entry = emu.file(*BIG)
    results: list = []
    download = threading.Thread(target=lambda: results.append(stream_sha256(big_url(old))))
    download.start()
    time.sleep(1.0)  # the download is in flight (about 3 s at 8 MiB/s)
    log = open(old.workdir / "upgraded.log", "ab")
    try:
        new = subprocess.Popen([hubcache_bin, "serve", "--config", str(old.config_path), "--upgrade"],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               cwd=old.workdir)
    finally:
        log.close()
    try:
        time.sleep(0.5)  # the new process waits on the upgrade socket
        old.proc.send_signal(signal.SIGQUIT)
        wait_until(lambda: pid_listens_on(new.pid, old.port), 30, what="the new process to take the port")
        # The admin listener's socket is handed over too.
        wait_until(lambda: pid_listens_on(new.pid, old.admin_port), 30,
                   what="the new process to take the admin port")
        download.join(120)
        assert results and results[0] == (200, entry["sha256"], entry["size"]), results
        # New connections are answered (by the new process once the old one has gone).
        r = requests.get(f"{old.url}/acme/tiny-model/resolve/main/config.json", timeout=30)
        assert r.status_code == 200
        assert stream_sha256(big_url(old))[1] == entry["sha256"]
        r = requests.get(f"{old.admin_url}/api/status", timeout=30)
        assert r.status_code == 200 and r.json()["listen"] == f"127.0.0.1:{old.port}"
    finally:
        stop_process(new, signal.SIGINT)
