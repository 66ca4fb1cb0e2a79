"""Metadata disk I/O stays off the request path: a metadata read stuck on a slow disk does not
stall other requests, and no request waits for a metadata write to be flushed (`fsync`).

Two slow-disk shims, both real: a FIFO where a metadata file should be (reading it blocks
until someone writes to the FIFO), and an LD_PRELOAD library that makes `fsync`/`fdatasync` of
files under the metadata directory wait until the test releases them."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import VALID, wait_until

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* fsync/fdatasync of a file under $HUBCACHE_TEST_STALL_UNDER wait (at most 60 s) until the
   file $HUBCACHE_TEST_STALL_RELEASE exists. Everything else is untouched. */
static void stall(int fd) {
    const char *under = getenv("HUBCACHE_TEST_STALL_UNDER");
    const char *release = getenv("HUBCACHE_TEST_STALL_RELEASE");
    char link[64], path[4096];
    if (!under || !release) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = 0;
    if (strncmp(path, under, strlen(under)) != 0) return;
    for (int i = 0; i < 1200 && access(release, F_OK) != 0; i++) usleep(50000);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    stall(fd);
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    stall(fd);
    return real(fd);
}
"""

TINY = "acme/tiny-model"


def build_shim(tmp_path: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the fsync shim")
    src, lib = tmp_path / "stall_fsync.c", tmp_path / "stall_fsync.so"
    src.write_text(SHIM_C)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(src), "-ldl"], check=True,
                   capture_output=True, timeout=120)
    return lib


def meta_files(cache: Path) -> list[Path]:
    return [p for p in (cache / "meta").rglob("*.json") if p.is_file()]


def test_no_request_waits_for_a_metadata_fsync(own_emu, mirror_factory, tmp_path):
    lib = build_shim(tmp_path)
    release = tmp_path / "release-fsync"
    cache = tmp_path / "stalled-cache"
    m = mirror_factory(own_emu, cache_dir=cache, cache={"durability": "fsync"},
                       env={"LD_PRELOAD": str(lib),
                            "HUBCACHE_TEST_STALL_UNDER": str(cache / "meta"),
                            "HUBCACHE_TEST_STALL_RELEASE": str(release)})
    try:
        # Cold metadata: each of these learns a revision, access, file metadata or API JSON,
        # which is written (with fsync, as configured) while the disk does not answer.
        for path in ("config.json", "model.safetensors", "sub/dir/notes.txt"):
            r = m.resolve("HEAD", TINY, "main", path, headers=VALID, timeout=20)
            assert r.status_code == 200, (path, r.status_code)
        for api in (f"/api/models/{TINY}/revision/main", f"/api/models/{TINY}/refs",
                    f"/api/models/{TINY}/tree/main"):
            assert m.get(api, timeout=20).status_code == 200, api
        # Reads see what is still waiting for the disk.
        assert m.resolve("HEAD", TINY, "main", "config.json", timeout=20).status_code == 200
        # The shim did hold the writes: nothing has reached its place yet.
        assert meta_files(cache) == [], meta_files(cache)
    finally:
        release.touch()
    # Released, the writes land.
    wait_until(lambda: len(meta_files(cache)) >= 6, 30, what="metadata on disk")
    # And are what an offline restart serves from.
    m.restart(offline=True)
    for api in (f"/api/models/{TINY}/revision/main", f"/api/models/{TINY}/tree/main"):
        assert m.get(api).status_code == 200, api


def test_a_stuck_metadata_read_does_not_stall_other_requests(own_emu, mirror_factory, tmp_path):
    cache = tmp_path / "fifo-cache"
    m = mirror_factory(own_emu, cache_dir=cache)
    # acme/tiny-model's revisions file is a FIFO: reading it blocks until a writer opens it.
    fifo = cache / "meta" / "models" / "acme" / "tiny-model" / "refs.json"
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    stuck: dict = {}

    def ask_stuck_repo():
        try:
            stuck["status"] = m.get(f"/api/models/{TINY}/revision/main", timeout=90).status_code
        except Exception as err:  # noqa: BLE001 - reported below
            stuck["error"] = repr(err)

    t = threading.Thread(target=ask_stuck_repo, daemon=True)
    t.start()
    try:
        wait_until(lambda: blocked_on_fifo(m.proc.pid), 20, what="a thread blocked opening the FIFO")
        # Meanwhile, other repos are served.
        r = m.resolve("GET", "acme/tiny-dataset", "main", "data/test.csv", repo_type="dataset", timeout=20)
        assert r.status_code == 200
        assert m.get("/api/models/tinyllama/revision/main", timeout=20).status_code == 200
    finally:
        release_fifo(fifo, t)
    t.join(30)
    assert stuck.get("status") == 200, stuck


def blocked_on_fifo(pid: int) -> bool:
    """Whether a thread of `pid` waits in open(2) of a FIFO for a writer."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "wchan").read_text().strip() == "wait_for_partner":
                return True
        except OSError:
            continue
    return False


def release_fifo(fifo: Path, waiter: threading.Thread) -> None:
    """Open the FIFO for writing (and close it) whenever a reader waits on it, until the
    request waiting on it is answered; bounded."""
    deadline = time.monotonic() + 30
    while waiter.is_alive() and time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError as err:
            if err.errno not in (errno.ENXIO, errno.ENOENT):
                raise
        time.sleep(0.05)
