"""Eviction in the running mirror (issue 7): the cache keeps to its budget with the configured
policy, never deletes what a client is reading or what is pinned, counts what a partly filled
file really holds, brings an evicted file back byte-exact, evicts on a full disk before falling
back to streaming uncached, expires idle files, and keeps its stats across a restart.

DingoSpeed, point by point: its LRU and FIFO both sort by mtime (here each policy picks its own
victim, whatever the mtimes say), it over-deletes sparse files (here a sparse file counts what
it holds), it deletes files in use (here a slowly read file stays).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from evict_helpers import (cache_bytes, download, eviction, make_repo, metric, on_disk,
                           repo_arg)
from helpers import MiB, blob_path, fill_up, sha256, wait_until

REPO = "acme/evict"


@pytest.fixture
def files(tmp_path):
    """The files of the policy scenario: A, B, C of 1 MiB, E of 2 MiB, D of 1 MiB."""
    return make_repo(tmp_path / "evict-repo", {"a.bin": MiB, "b.bin": MiB, "c.bin": MiB,
                                               "e.bin": 2 * MiB, "d.bin": MiB}, seed=1)


def scenario(mirror, files):
    """Fill A, B, C, E; read B and A again (as other downloads); then D pushes the cache over
    its 5.5 MiB budget. Last reads: B < C < E < A; first fills: A < B < C < E; downloads:
    A 2, B 2, C 1, E 1; sizes: E largest."""
    steps = [("a.bin", "x"), ("b.bin", "x"), ("b.bin", "y"), ("c.bin", "x"), ("e.bin", "x"),
             ("a.bin", "y")]
    for name, agent in steps:
        assert download(mirror, REPO, name, agent) == files[name]
        time.sleep(0.05)          # distinct millisecond clocks
    assert all(on_disk(mirror.cache_dir, files[n]) for n in ["a.bin", "b.bin", "c.bin", "e.bin"])
    # An mtime-based "LRU" (DingoSpeed) would take A now; FIFO and LRU must not care.
    for name, when in [("a.bin", 1_000_000), ("b.bin", time.time() + 3600)]:
        os.utime(blob_path(mirror.cache_dir, sha256(files[name])), (when, when))
    settle(mirror, 4)
    assert download(mirror, REPO, "d.bin", "x") == files["d.bin"]


def settle(mirror, files: int) -> None:
    """Wait until `files` completed files were verified and their fills let go (a file being
    hashed is in use, and rightly never evicted)."""
    wait_until(lambda: metric(mirror, "hubcache_verified_files_total") >= files, 20,
               what=f"{files} files verified")
    time.sleep(0.3)


VICTIM = {"lru": "b.bin", "fifo": "a.bin", "large_first": "e.bin", "lfuda": "c.bin"}


@pytest.mark.parametrize("policy", sorted(VICTIM))
def test_each_policy_evicts_its_own_victim_and_only_that(policy, files, tmp_path, emu_factory,
                                                        mirror_factory):
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "evict-repo"))
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"},
                            **eviction(policy, max_size=f"{11 * MiB // 2}"))
    scenario(mirror, files)
    victim = VICTIM[policy]
    wait_until(lambda: not on_disk(mirror.cache_dir, files[victim]), 20,
               what=f"{policy} to evict {victim}")
    time.sleep(1)
    kept = [n for n in files if n != victim]
    assert [n for n in kept if not on_disk(mirror.cache_dir, files[n])] == [], \
        f"{policy} evicted more than {victim}"
    assert metric(mirror, "hubcache_evicted_blobs_total",
                  f'policy="{policy}",reason="budget"') == 1
    assert cache_bytes(mirror.cache_dir) <= 11 * MiB // 2


def test_a_small_budget_is_kept_and_an_evicted_file_comes_back_exact(tmp_path, emu_factory,
                                                                      mirror_factory):
    names = {f"f{i}.bin": MiB for i in range(8)}
    data = make_repo(tmp_path / "many", names, seed=2)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "many"))
    budget = 7 * MiB // 2
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"}, **eviction("lru", max_size=budget))
    for n, name in enumerate(sorted(names)):
        assert download(mirror, REPO, name) == data[name]
        settle(mirror, n + 1)
    wait_until(lambda: cache_bytes(mirror.cache_dir) <= budget, 20, what="the budget to be kept")
    assert on_disk(mirror.cache_dir, data["f7.bin"]), "the newest file was evicted"
    assert not on_disk(mirror.cache_dir, data["f0.bin"])
    assert metric(mirror, "hubcache_evicted_blobs_total", 'policy="lru",reason="budget"') >= 5
    assert metric(mirror, "hubcache_cache_allocated_bytes") <= budget
    assert metric(mirror, "hubcache_cache_budget_bytes") == budget
    # The evicted file is a normal miss: fetched again, whole and exact.
    sha = sha256(data["f0.bin"])
    before = emu.cdn_bytes_for(sha)
    r = mirror.resolve("GET", REPO, "main", "f0.bin", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data["f0.bin"][100:200]
    assert download(mirror, REPO, "f0.bin") == data["f0.bin"]
    assert emu.cdn_bytes_for(sha) - before >= MiB
    wait_until(lambda: on_disk(mirror.cache_dir, data["f0.bin"]), 10, what="f0 cached again")


class SlowReader(threading.Thread):
    """Reads a file through the mirror 64 KiB at a time, slowly, until told to hurry."""

    def __init__(self, mirror, path: str):
        super().__init__(daemon=True)
        self.mirror, self.path = mirror, path
        self.hurry = threading.Event()
        self.started_reading = threading.Event()
        self.digest = hashlib.sha256()
        self.read = 0
        self.error = None

    def run(self):
        try:
            with self.mirror.resolve("GET", REPO, "main", self.path, stream=True, timeout=120,
                                     headers={"User-Agent": "slow"}) as r:
                assert r.status_code == 200, r.status_code
                for part in r.iter_content(64 * 1024):
                    self.digest.update(part)
                    self.read += len(part)
                    self.started_reading.set()
                    if not self.hurry.is_set():
                        time.sleep(0.05)
        except Exception as e:          # noqa: BLE001 - reported by the test
            self.error = repr(e)


def test_a_slow_client_reading_the_oldest_file_gets_exact_bytes_and_the_file_stays(
        tmp_path, emu_factory, mirror_factory):
    """DingoSpeed deletes files in use; here the first-filled file, which fifo would evict
    first, stays while a client reads it, and the next one goes instead."""
    data = make_repo(tmp_path / "slow", {"old.bin": 24 * MiB, "x.bin": 2 * MiB,
                                         "y.bin": 2 * MiB}, seed=3)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "slow"))
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"},
                            **eviction("fifo", max_size=27 * MiB))
    assert download(mirror, REPO, "old.bin") == data["old.bin"]
    settle(mirror, 1)
    reader = SlowReader(mirror, "old.bin")
    reader.start()
    try:
        assert reader.started_reading.wait(30), reader.error
        assert download(mirror, REPO, "x.bin") == data["x.bin"]
        # x.bin idle (verified, its fill let go) before y.bin goes over the budget: otherwise
        # x.bin is rightly in use and y.bin goes instead (seen on a loaded machine).
        settle(mirror, 2)
        assert download(mirror, REPO, "y.bin") == data["y.bin"]
        wait_until(lambda: not on_disk(mirror.cache_dir, data["x.bin"]), 20,
                   what="eviction of the next file in fifo order")
        assert reader.is_alive() and reader.read < len(data["old.bin"]), \
            "the slow read ended before eviction ran: the test proves nothing"
        assert on_disk(mirror.cache_dir, data["old.bin"]), "a file being read was evicted"
        assert on_disk(mirror.cache_dir, data["y.bin"])
    finally:
        reader.hurry.set()
        reader.join(120)
    assert reader.error is None, reader.error
    assert reader.read == len(data["old.bin"])
    assert reader.digest.hexdigest() == sha256(data["old.bin"]), "the slow client got wrong bytes"


def test_pinned_repos_stay_and_other_files_go_instead(tmp_path, emu_factory, mirror_factory):
    pinned = make_repo(tmp_path / "pinned", {"p1.bin": MiB, "p2.bin": MiB}, seed=4)
    other = make_repo(tmp_path / "other", {"x.bin": MiB, "y.bin": MiB, "z.bin": MiB}, seed=5)
    emu = emu_factory(extra=repo_arg("acme/keep", tmp_path / "pinned")
                      + repo_arg(REPO, tmp_path / "other"))
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"},
                            **eviction("lru", max_size=7 * MiB // 2, pin=["acme/ke*"]))
    for n, name in enumerate(["p1.bin", "p2.bin"]):
        assert download(mirror, "acme/keep", name) == pinned[name]
        settle(mirror, n + 1)
    for n, name in enumerate(["x.bin", "y.bin", "z.bin"]):
        assert download(mirror, REPO, name) == other[name]
        settle(mirror, n + 3)
    wait_until(lambda: not on_disk(mirror.cache_dir, other["x.bin"])
               and not on_disk(mirror.cache_dir, other["y.bin"]), 20,
               what="the unpinned files to be evicted in lru order")
    assert on_disk(mirror.cache_dir, pinned["p1.bin"]) and on_disk(mirror.cache_dir, pinned["p2.bin"]), \
        "a pinned file was evicted"
    assert on_disk(mirror.cache_dir, other["z.bin"])


def test_a_partly_filled_file_counts_what_it_holds_not_its_size(tmp_path, emu_factory,
                                                                 mirror_factory):
    """DingoSpeed over-deletes sparse files (it mixes their logical size into the sums). A
    32 MiB file of which one block was read counts one block here."""
    data = make_repo(tmp_path / "sparse", {"huge.bin": 32 * MiB, "a.bin": MiB, "b.bin": MiB,
                                           "c.bin": MiB, "d.bin": MiB}, seed=6)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "sparse"))
    budget = 9 * MiB // 2
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"},
                            fill={"mode": "on_demand", "read_ahead": "0"},
                            **eviction("lru", max_size=budget))
    r = mirror.resolve("GET", REPO, "main", "huge.bin", headers={"Range": "bytes=5000-5999"})
    assert r.status_code == 206 and r.content == data["huge.bin"][5000:6000]
    for name in ["a.bin", "b.bin", "c.bin"]:
        assert download(mirror, REPO, name) == data[name]
    time.sleep(1.5)
    assert all(on_disk(mirror.cache_dir, data[n]) for n in ["huge.bin", "a.bin", "b.bin", "c.bin"]), \
        "4 MiB of allocated data under a 4.5 MiB budget was evicted"
    used = metric(mirror, "hubcache_cache_allocated_bytes")
    assert 4 * MiB <= used < budget, used
    assert metric(mirror, "hubcache_evicted_blobs_total", 'policy="lru",reason="budget"') == 0
    # One more file: exactly one victim, the sparse file (least recently read), 1 MiB of it.
    assert download(mirror, REPO, "d.bin") == data["d.bin"]
    wait_until(lambda: not on_disk(mirror.cache_dir, data["huge.bin"]), 20,
               what="the sparse file to be evicted")
    time.sleep(1)
    assert all(on_disk(mirror.cache_dir, data[n]) for n in ["a.bin", "b.bin", "c.bin", "d.bin"])
    assert metric(mirror, "hubcache_evicted_blobs_total", 'policy="lru",reason="budget"') == 1
    freed = metric(mirror, "hubcache_evicted_bytes_total", 'policy="lru",reason="budget"')
    assert freed < 2 * MiB, f"evicting a 1-block sparse file freed {freed} bytes?"


def test_files_nobody_read_for_max_idle_are_evicted(tmp_path, emu_factory, mirror_factory):
    data = make_repo(tmp_path / "idle", {"idle.bin": MiB, "busy.bin": MiB}, seed=7)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "idle"))
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"}, **eviction("lru", max_idle="3s"))
    assert download(mirror, REPO, "idle.bin") == data["idle.bin"]
    deadline = time.monotonic() + 30
    while on_disk(mirror.cache_dir, data["idle.bin"]):
        assert time.monotonic() < deadline, "the idle file was never evicted"
        assert download(mirror, REPO, "busy.bin", agent=f"a{time.monotonic()}") == data["busy.bin"]
        time.sleep(1)
    assert on_disk(mirror.cache_dir, data["busy.bin"]), "a file read every second was evicted"
    assert metric(mirror, "hubcache_evicted_blobs_total", 'policy="lru",reason="idle"') == 1


def test_the_index_keeps_its_stats_across_a_restart(tmp_path, emu_factory, mirror_factory):
    """LRU by hubcache's own record of reads, persisted: after a restart the file read least
    recently before it goes first, although its file is the newest on disk."""
    data = make_repo(tmp_path / "restart", {"a.bin": MiB, "b.bin": MiB, "c.bin": MiB}, seed=8)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "restart"))
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"},
                            **eviction("lru", max_size=5 * MiB // 2))
    for name, agent in [("b.bin", "x"), ("a.bin", "x"), ("b.bin", "y")]:
        assert download(mirror, REPO, name, agent) == data[name]
        time.sleep(0.05)
    mirror.stop()
    snapshot = mirror.cache_dir / "evict" / "index.snap"
    assert snapshot.is_file(), "no index snapshot after SIGINT"
    # mtimes say a.bin is the newest: an index rebuilt from the disk would evict b.bin.
    now = time.time()
    os.utime(blob_path(mirror.cache_dir, sha256(data["a.bin"])), (now, now))
    os.utime(blob_path(mirror.cache_dir, sha256(data["b.bin"])), (now - 3600, now - 3600))
    mirror.start()
    assert download(mirror, REPO, "c.bin") == data["c.bin"]
    wait_until(lambda: not on_disk(mirror.cache_dir, data["a.bin"]), 20,
               what="the least recently read file (before the restart) to go")
    assert on_disk(mirror.cache_dir, data["b.bin"])


def test_a_full_disk_evicts_to_make_room_instead_of_streaming_uncached(small_fs, tmp_path,
                                                                       emu_factory, mirror_factory):
    """No budget, no watermarks: when a new file does not fit above the store's reserve
    (256 MiB), eviction makes room for it before hubcache would stream it uncached."""
    fs = small_fs(300)
    names = {f"g{i}.bin": 8 * MiB for i in range(8)}
    data = make_repo(tmp_path / "full", names, seed=9)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "full"))
    mirror = mirror_factory(emu, cache={"dir": str(fs), "block_size": "1MiB"})
    for n, name in enumerate(sorted(names)):
        assert download(mirror, REPO, name) == data[name]
        settle(mirror, n + 1)     # a file being verified is in use: it may not make room
    assert metric(mirror, "hubcache_uncached_streams_total") == 0, "a file was streamed uncached"
    assert metric(mirror, "hubcache_evicted_blobs_total", 'policy="lru",reason="enospc"') >= 1
    assert on_disk(fs, data["g7.bin"]) and not on_disk(fs, data["g0.bin"])


def test_a_write_that_hits_enospc_evicts_and_the_download_stays_cached(small_fs, tmp_path,
                                                                       emu_factory, mirror_factory):
    """The disk fills up (another program) while a file is being fetched: the write that
    fails makes eviction free older files, is retried, and the file is cached complete."""
    fs = small_fs(320)
    data = make_repo(tmp_path / "midfill", {"old1.bin": 8 * MiB, "old2.bin": 8 * MiB,
                                            "new.bin": 16 * MiB}, seed=10)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "midfill") + ("--cdn-rate", str(4 * MiB)))
    mirror = mirror_factory(emu, cache={"dir": str(fs), "block_size": "1MiB"},
                            fill={"segment": "4MiB", "connections_per_file": 1})
    for n, name in enumerate(["old1.bin", "old2.bin"]):
        assert download(mirror, REPO, name) == data[name]
        settle(mirror, n + 1)
    path = blob_path(fs, sha256(data["new.bin"]))
    results: list = []
    t = threading.Thread(target=lambda: results.append(download(mirror, REPO, "new.bin",
                                                                timeout=90)))
    t.start()
    try:
        wait_until(lambda: path.exists() and path.stat().st_blocks * 512 >= 3 * MiB, 30,
                   what="3 blocks of the new file written")
        assert fill_up(fs).exists()
    finally:
        t.join(90)
    assert results and results[0] == data["new.bin"]
    assert metric(mirror, "hubcache_evicted_blobs_total", 'policy="lru",reason="enospc"') >= 1
    assert metric(mirror, "hubcache_uncached_streams_total") == 0
    wait_until(lambda: metric(mirror, "hubcache_verified_files_total") >= 3, 30,
               what="the new file to be complete and verified")
    assert not on_disk(fs, data["old1.bin"])
