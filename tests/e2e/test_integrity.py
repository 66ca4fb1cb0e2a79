"""Integrity and durability under injected faults (issue 4): damaged and truncated blob files,
kill -9 in the middle of a fill, a lost storage root of two, a full file system, and `hubcache
cache verify [--repair]`. (Importing an Olah / DingoSpeed cache: test_import_olah.py.)

After every fault, downloads through the mirror must be byte-identical to the emulator's
content. Upstream traffic is read from the emulator's CDN log (`cdn_requests`, with the Range
of each request), the store's state from the blob files themselves (docs/storage-format.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import helpers
from helpers import (MiB, BlobHeader, Mirror, blob_path, crc32c, fill_up, flip_byte,
                     read_blob_header, rendezvous_order, wait_until)

BIG = ("acme/big-model", "main", "big.bin")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

@dataclass
class Download:
    status: int
    sha256: str
    read: int
    content_length: int | None
    error: str | None       # the body broke off (a "short" response)


def download(mirror: Mirror, repo: str = BIG[0], rev: str = BIG[1], path: str = BIG[2],
             headers: dict | None = None, timeout: float = 90) -> Download:
    """GET a file through the mirror, hashing the body; a body that breaks off is recorded."""
    digest = hashlib.sha256()
    read = 0
    error = None
    with mirror.resolve("GET", repo, rev, path, headers=headers or {}, stream=True,
                        timeout=timeout) as r:
        length = r.headers.get("Content-Length")
        try:
            for part in r.iter_content(1 << 20):
                digest.update(part)
                read += len(part)
        except (requests.RequestException, OSError) as e:
            error = repr(e)
        return Download(r.status_code, digest.hexdigest(), read,
                        int(length) if length is not None else None, error)


def assert_identical(d: Download, entry: dict, what: str = "download") -> None:
    assert d.status == 200, f"{what}: HTTP {d.status}"
    assert d.error is None, f"{what}: the 200 body broke off after {d.read} bytes: {d.error}"
    assert d.read == entry["size"], f"{what}: {d.read} bytes of {entry['size']}"
    assert d.sha256 == entry["sha256"], f"{what}: wrong bytes (sha256 {d.sha256})"


def metric(mirror: Mirror, name: str) -> float:
    text = mirror.metrics_text()
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} missing from /metrics:\n{text}"
    return float(m.group(1))


@dataclass
class CdnRequest:
    start: int          # first byte asked for
    end: int            # one past the last byte asked for
    sent: int           # body bytes the CDN sent


def cdn_mark(emu) -> int:
    return len(emu.stats()["cdn_requests"])


def cdn_requests(emu, sha: str, size: int, since: int = 0) -> list[CdnRequest]:
    """The CDN GETs for blob `sha` made after mark `since`, with the byte range each asked for."""
    out = []
    for req in emu.stats()["cdn_requests"][since:]:
        if sha not in req["path"] or req["method"] != "GET":
            continue
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", req.get("range") or "")
        if m:
            start = int(m.group(1))
            end = int(m.group(2)) + 1 if m.group(2) else size
        else:
            start, end = 0, size
        out.append(CdnRequest(start, min(end, size), req["bytes"]))
    return out


def blocks_asked(reqs: list[CdnRequest], block_size: int) -> set[int]:
    """The blocks any of the requests asked for (even partly)."""
    out = set()
    for r in reqs:
        out.update(range(r.start // block_size, (r.end - 1) // block_size + 1))
    return out


def hubcache_cli(binary: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def cli_verify(mirror: Mirror, repair: bool = False) -> subprocess.CompletedProcess:
    args = ["cache", "verify", "--config", str(mirror.config_path)] + (["--repair"] if repair else [])
    return hubcache_cli(mirror.binary, *args)


def complete_copy(root: Path, sha: str) -> BlobHeader | None:
    """The header of a complete copy of `sha` on `root` (every block present, full length)."""
    h = read_blob_header(blob_path(root, sha))
    if h is not None and h.complete and h.file_len >= h.data_offset + h.size:
        return h
    return None


def cached_big_file(emu_factory, mirror_factory, big_size: int = 8 * MiB, **config):
    """A mirror with big.bin downloaded, completed and verified; block size 1 MiB by default."""
    emu = emu_factory(big_size=big_size)
    config.setdefault("cache", {})
    config["cache"].setdefault("block_size", "1MiB")
    mirror = mirror_factory(emu, **config)
    entry = emu.file(*BIG)
    assert_identical(download(mirror), entry, "first download")
    wait_until(lambda: metric(mirror, "hubcache_verified_files_total") >= 1, 30,
               what="the completed file to be verified")
    return emu, mirror, entry


# --------------------------------------------------------------------------------------------
# damaged and truncated blob files
# --------------------------------------------------------------------------------------------

def test_flipped_byte_in_a_stored_block_is_refetched_not_served(emu_factory, mirror_factory):
    emu, mirror, entry = cached_big_file(emu_factory, mirror_factory)
    sha, size = entry["sha256"], entry["size"]
    path = blob_path(mirror.cache_dir, sha)
    h = BlobHeader(path)
    assert h.complete and h.block_size == MiB and h.block_count == 8, h
    bad = 5
    start, end = h.block_span(bad)
    flip_byte(path, h.data_offset + start + 12345)

    mark = cdn_mark(emu)
    assert_identical(download(mirror), entry, "download after the flip")
    reqs = cdn_requests(emu, sha, size, mark)
    assert blocks_asked(reqs, h.block_size) == {bad}, f"refetched more than block {bad}: {reqs}"
    assert sum(r.sent for r in reqs) == end - start, reqs
    assert metric(mirror, "hubcache_corrupt_blocks_total") >= 1

    # The block was repaired on disk, and is now served from it.
    wait_until(lambda: bad in BlobHeader(path).present, 10, what="the refetched block to be committed")
    assert BlobHeader(path).content()[start:end] == emu.content(sha)[start:end]
    mark = cdn_mark(emu)
    assert_identical(download(mirror), entry, "third download")
    assert cdn_requests(emu, sha, size, mark) == []


def test_truncated_blob_file_refetches_only_the_lost_blocks(emu_factory, mirror_factory):
    emu, mirror, entry = cached_big_file(emu_factory, mirror_factory)
    sha, size = entry["sha256"], entry["size"]
    path = blob_path(mirror.cache_dir, sha)
    h = BlobHeader(path)
    assert h.complete and h.block_count == 8, h
    cut_block = 5                      # cut in the middle of block 5: blocks 5, 6, 7 are lost
    os.truncate(path, h.data_offset + cut_block * h.block_size + h.block_size // 2)

    mark = cdn_mark(emu)
    assert_identical(download(mirror), entry, "download after the truncation")
    reqs = cdn_requests(emu, sha, size, mark)
    assert blocks_asked(reqs, h.block_size) == set(range(cut_block, 8)), reqs
    assert sum(r.sent for r in reqs) == size - cut_block * h.block_size, reqs

    wait_until(lambda: complete_copy(mirror.cache_dir, sha), 20, what="the file to be complete again")
    assert BlobHeader(path).content() == emu.content(sha)


def test_truncation_under_an_open_download_is_refetched_not_served_short(emu_factory, mirror_factory):
    """The blob is truncated while a client is in the middle of reading it (the mirror holds
    the file open): the rest of that download, and a new download, are still correct."""
    emu, mirror, entry = cached_big_file(emu_factory, mirror_factory, big_size=32 * MiB)
    sha, size = entry["sha256"], entry["size"]
    path = blob_path(mirror.cache_dir, sha)
    h = BlobHeader(path)
    assert h.complete, h
    cut_block = 20
    mark = cdn_mark(emu)
    digest = hashlib.sha256()
    read = 0
    error = None
    with mirror.resolve("GET", *BIG, stream=True, timeout=60) as slow:
        assert slow.status_code == 200
        parts = slow.iter_content(256 * 1024)
        first = next(parts)                         # the mirror now has the blob open
        digest.update(first)
        read = len(first)
        time.sleep(0.3)
        os.truncate(path, h.data_offset + cut_block * h.block_size + 1000)
        second = download(mirror, timeout=60)       # a new client, while the first one reads
        try:
            for part in parts:
                digest.update(part)
                read += len(part)
        except (requests.RequestException, OSError) as e:
            error = repr(e)
    assert_identical(second, entry, "download started after the truncation")
    assert_identical(Download(200, digest.hexdigest(), read, size, error), entry,
                     "download in progress during the truncation")
    reqs = cdn_requests(emu, sha, size, mark)
    assert blocks_asked(reqs, h.block_size) <= set(range(cut_block, h.block_count)), \
        f"blocks before the cut were fetched again: {reqs}"


def test_complete_file_failing_its_sha256_is_discarded_and_fetched_again(emu_factory, mirror_factory):
    """A complete copy whose content does not hash to its id (page checksums consistent, as
    after a crash between completion and verification): the mirror discards it when it
    verifies it, counts it, and fetches the file again."""
    emu, mirror, entry = cached_big_file(emu_factory, mirror_factory, cache={"block_size": "64KiB"})
    sha, size = entry["sha256"], entry["size"]
    mirror.stop()
    path = blob_path(mirror.cache_dir, sha)
    h = BlobHeader(path)
    assert h.complete and h.verified and h.page_size == 64 * 1024, h
    page = 40
    rewrite_page_consistently(h, page, offset_in_page=777)
    with open(path, "r+b") as f:                     # clear the "verified" flag (bit 0)
        f.seek(12)
        f.write(struct.pack("<I", h.flags & ~1))

    mirror.start()
    mark = cdn_mark(emu)
    r = mirror.resolve("GET", *BIG, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == emu.content(sha)[:100]
    wait_until(lambda: metric(mirror, "hubcache_verify_failures_total") >= 1, 30,
               what="the mismatch to be detected")
    assert_identical(download(mirror), entry, "download after the mismatch")
    wait_until(lambda: metric(mirror, "hubcache_verified_files_total") >= 1, 30,
               what="the refetched file to verify")
    assert BlobHeader(path).content() == emu.content(sha)
    assert sum(r.sent for r in cdn_requests(emu, sha, size, mark)) >= size - h.block_size


def rewrite_page_consistently(h: BlobHeader, page: int, offset_in_page: int) -> None:
    """Flip a content byte of `page` and store the page's new CRC-32C, so the damage passes the
    page checksum and only the content hash can catch it."""
    start = page * h.page_size
    end = min(start + h.page_size, h.size)
    crc_at = helpers.BLOB_FIXED_HEADER + (h.block_count + 7) // 8 + 4 * page
    with open(h.path, "r+b") as f:
        f.seek(h.data_offset + start)
        data = bytearray(f.read(end - start))
        data[offset_in_page] ^= 0xFF
        f.seek(h.data_offset + start)
        f.write(data)
        f.seek(crc_at)
        f.write(struct.pack("<I", crc32c(bytes(data))))


# --------------------------------------------------------------------------------------------
# kill -9 in the middle of a fill
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_kill_9_mid_fill_then_restart_reuses_complete_blocks(emu_factory, mirror_factory, durability):
    rate = 4 * MiB                         # per CDN connection: 2 connections, 32 MiB in ~4 s
    emu = emu_factory(big_size=32 * MiB, extra=("--cdn-rate", str(rate)))
    mirror = mirror_factory(emu, cache={"block_size": "1MiB", "durability": durability},
                            fill={"segment": "4MiB", "connections_per_file": 2})
    entry = emu.file(*BIG)
    sha, size = entry["sha256"], entry["size"]
    path = blob_path(mirror.cache_dir, sha)

    results: list = []

    def client():
        try:
            results.append(download(mirror, timeout=60))
        except (requests.RequestException, OSError) as e:
            results.append(e)

    t = threading.Thread(target=client)
    t.start()
    try:
        wait_until(lambda: (h := read_blob_header(path)) is not None and len(h.present) >= 8, 30,
                   what="8 blocks committed")
    finally:
        mirror.stop(sig=signal.SIGKILL)
        t.join(60)
    assert mirror.proc.returncode == -signal.SIGKILL
    assert not t.is_alive()
    if results and isinstance(results[0], Download) and results[0].error is None:
        assert results[0].read < size, "the client got the whole file before the kill"

    before = BlobHeader(path)
    assert 8 <= len(before.present) < before.block_count, before
    mark = cdn_mark(emu)
    mirror.start()
    assert_identical(download(mirror), entry, "download after the restart")
    wait_until(lambda: metric(mirror, "hubcache_verified_files_total") >= 1, 30,
               what="the file to complete and verify")
    after = cdn_requests(emu, sha, size, mark)
    again = blocks_asked(after, before.block_size) & before.present
    assert not again, f"blocks complete before the kill were fetched again: {sorted(again)}"
    missing = set(range(before.block_count)) - before.present     # incl. the half-written ones
    assert missing <= blocks_asked(after, before.block_size), \
        f"blocks not committed before the kill were not fetched again: {sorted(missing)}, {after}"
    total = sum(r.sent for r in cdn_requests(emu, sha, size))
    assert total < 2 * size, f"the CDN sent {total} bytes for a {size}-byte file"
    assert total <= size + 8 * MiB, f"more than the in-flight segments were lost: {total} bytes"
    assert BlobHeader(path).content() == emu.content(sha)


# --------------------------------------------------------------------------------------------
# two roots, two replicas
# --------------------------------------------------------------------------------------------

def replicated(emu_factory, mirror_factory, tmp_path):
    """big.bin cached with two replicas on roots A and B; returns the roots in the blob's
    placement order (the first is the copy the mirror reads)."""
    emu = emu_factory(big_size=8 * MiB)
    roots = [tmp_path / "rootA", tmp_path / "rootB"]
    mirror = mirror_factory(emu, cache={"dir": None, "roots": [str(r) for r in roots],
                                        "replicas": 2, "block_size": "1MiB"})
    entry = emu.file(*BIG)
    sha = entry["sha256"]
    assert_identical(download(mirror), entry, "first download")
    wait_until(lambda: all(complete_copy(r, sha) for r in roots), 30,
               what="a complete copy on both roots")
    content = emu.content(sha)
    for r in roots:
        assert BlobHeader(blob_path(r, sha)).content() == content, f"copy on {r} differs"
    return emu, mirror, entry, rendezvous_order(roots, sha)


def wait_remade(mirror: Mirror, root: Path, entry: dict) -> str:
    """Waits until the lost copy on `root` is complete again; after a restart at the latest."""
    sha = entry["sha256"]
    try:
        wait_until(lambda: complete_copy(root, sha), 3, what="the copy to be re-made")
        return "while running"
    except TimeoutError:
        mirror.restart()
        assert_identical(download(mirror), entry, "download after the restart")
        wait_until(lambda: complete_copy(root, sha), 20, what="the lost copy to be re-made after a restart")
        return "after a restart"


@pytest.mark.parametrize("lost", ["blob file", "blobs tree"])
def test_lost_copy_on_one_root_is_served_from_the_other_and_remade(emu_factory, mirror_factory,
                                                                    tmp_path, lost):
    emu, mirror, entry, (first, second) = replicated(emu_factory, mirror_factory, tmp_path)
    sha, size = entry["sha256"], entry["size"]
    fetched = sum(r.sent for r in cdn_requests(emu, sha, size))
    assert fetched <= size * 1.02

    if lost == "blob file":
        blob_path(first, sha).unlink()
    else:
        shutil.rmtree(first / "blobs")
    mark = cdn_mark(emu)
    for i in range(2):
        assert_identical(download(mirror), entry, f"download {i + 1} after losing {lost} on {first.name}")
    assert cdn_requests(emu, sha, size, mark) == [], "a lost replica was fetched from upstream"

    wait_remade(mirror, first, entry)
    assert BlobHeader(blob_path(first, sha)).content() == emu.content(sha)
    assert complete_copy(second, sha)
    assert cdn_requests(emu, sha, size, mark) == [], "re-making the replica used upstream"


def test_unusable_root_is_skipped_and_its_copy_remade_once_it_works_again(emu_factory, mirror_factory,
                                                                         tmp_path):
    """One root starts failing with an error other than "not found" (its `blobs` is no longer
    a directory: ENOTDIR): reads use the other root; once the root is fixed, a restart re-makes
    the copy."""
    emu, mirror, entry, (first, second) = replicated(emu_factory, mirror_factory, tmp_path)
    sha, size = entry["sha256"], entry["size"]
    shutil.rmtree(first / "blobs")
    (first / "blobs").write_bytes(b"not a directory")
    mark = cdn_mark(emu)
    for i in range(2):
        assert_identical(download(mirror), entry, f"download {i + 1} with {first.name} failing")
    assert cdn_requests(emu, sha, size, mark) == [], "served from upstream instead of the other root"

    mirror.stop()
    (first / "blobs").unlink()
    mirror.start()
    assert_identical(download(mirror), entry, f"download after {first.name} was fixed")
    wait_until(lambda: complete_copy(first, sha), 20, what="the copy to be re-made on the fixed root")
    assert BlobHeader(blob_path(first, sha)).content() == emu.content(sha)
    assert cdn_requests(emu, sha, size, mark) == []


def test_mirror_restarted_without_one_root_serves_from_the_other(emu_factory, mirror_factory, tmp_path):
    emu, mirror, entry, (first, second) = replicated(emu_factory, mirror_factory, tmp_path)
    sha, size = entry["sha256"], entry["size"]
    mirror.stop()
    shutil.rmtree(first)
    mark = cdn_mark(emu)
    mirror.start()
    assert_identical(download(mirror), entry, f"download without {first.name}")
    assert cdn_requests(emu, sha, size, mark) == [], "served from upstream instead of the other root"
    assert complete_copy(second, sha)


def test_verify_repair_remakes_a_lost_replica(emu_factory, mirror_factory, tmp_path):
    emu, mirror, entry, (first, second) = replicated(emu_factory, mirror_factory, tmp_path)
    sha, size = entry["sha256"], entry["size"]
    mirror.stop()
    blob_path(first, sha).unlink()

    check = cli_verify(mirror)
    assert check.returncode == 1, (check.returncode, check.stdout, check.stderr)
    assert re.search(rf"problem: {sha}: 1 complete copies, 2 wanted", check.stdout), check.stdout
    repair = cli_verify(mirror, repair=True)
    assert repair.returncode == 0, (repair.returncode, repair.stdout, repair.stderr)
    assert "1 replicas made" in repair.stdout, repair.stdout
    assert complete_copy(first, sha)
    assert BlobHeader(blob_path(first, sha)).content() == emu.content(sha)
    again = cli_verify(mirror)
    assert again.returncode == 0 and "problem" not in again.stdout, again.stdout

    mark = cdn_mark(emu)
    mirror.start()
    assert_identical(download(mirror), entry, "download after the repair")
    assert cdn_requests(emu, sha, size, mark) == []


# --------------------------------------------------------------------------------------------
# disk full
# --------------------------------------------------------------------------------------------

def assert_bytes_or_clean_error(d: Download, entry: dict, what: str) -> None:
    """All the bytes, correct, with a 200 — or a clean 5xx; never a short or wrong 200."""
    if d.status == 200:
        assert_identical(d, entry, what)
    else:
        assert 500 <= d.status < 600, f"{what}: HTTP {d.status}"


def test_file_larger_than_the_free_space_is_streamed_uncached(small_fs, emu_factory, mirror_factory):
    fs = small_fs(40)
    emu = emu_factory(big_size=48 * MiB)
    mirror = mirror_factory(emu, cache={"dir": str(fs), "block_size": "1MiB"})
    entry = emu.file(*BIG)
    sha = entry["sha256"]
    for i in range(2):
        assert_bytes_or_clean_error(download(mirror), entry, f"download {i + 1} into a full cache")
    assert metric(mirror, "hubcache_store_no_space_total") >= 1
    time.sleep(0.5)
    h = read_blob_header(blob_path(fs, sha))
    assert h is None or not h.complete, f"a file that cannot fit looks complete: {h}"
    mirror.stop()
    check = cli_verify(mirror)
    assert check.returncode == 0 and "problem" not in check.stdout, (check.stdout, check.stderr)
    h = read_blob_header(blob_path(fs, sha))
    assert h is None or not h.complete, h


def test_running_out_of_space_mid_fill_never_leaves_a_complete_looking_file(small_fs, emu_factory,
                                                                             mirror_factory):
    # Room for the blob when it is created (32 MiB + the store's 256 MiB reserve), then the
    # file system is filled up while the (throttled) fill is running.
    fs = small_fs(320)
    emu = emu_factory(big_size=16 * MiB, extra=("--cdn-rate", str(4 * MiB)))     # ~4 s to fill
    mirror = mirror_factory(emu, cache={"dir": str(fs), "block_size": "1MiB"},
                            fill={"segment": "4MiB", "connections_per_file": 1})
    entry = emu.file(*BIG)
    sha, size = entry["sha256"], entry["size"]
    path = blob_path(fs, sha)

    results: list = []
    t = threading.Thread(target=lambda: results.append(download(mirror, timeout=90)))
    t.start()
    try:
        wait_until(lambda: (h := read_blob_header(path)) is not None and len(h.present) >= 3, 30,
                   what="3 blocks committed")
        filler = fill_up(fs)
        h = BlobHeader(path)
        assert not h.complete, f"test too slow: the fill completed before the disk was full ({h})"
    finally:
        t.join(90)
    assert not t.is_alive() and results, "the download did not finish"
    assert_bytes_or_clean_error(results[0], entry, "download while the disk filled up")
    wait_until(lambda: metric(mirror, "hubcache_store_no_space_total") >= 1, 10,
               what="the no-space metric")
    h = BlobHeader(path)
    assert not h.complete, f"the file looks complete on a full disk: {h}"
    content = emu.content(sha)
    stored = h.content()
    for b in h.present:
        s, e = h.block_span(b)
        assert stored[s:e] == content[s:e], f"block {b} is marked present with wrong bytes"
    assert_bytes_or_clean_error(download(mirror), entry, "download on a full disk")

    check = cli_verify(mirror)
    assert check.returncode == 0 and "problem" not in check.stdout, (check.stdout, check.stderr)

    # Space again: the file is completed, and correct.
    filler.unlink()
    assert_identical(download(mirror), entry, "download after space was freed")
    wait_until(lambda: metric(mirror, "hubcache_verified_files_total") >= 1, 30,
               what="the file to complete once there is space")
    assert BlobHeader(path).content() == content
    assert sum(r.sent for r in cdn_requests(emu, sha, size)) < 4 * size


# --------------------------------------------------------------------------------------------
# hubcache cache verify [--repair]
# --------------------------------------------------------------------------------------------

def test_cache_verify_reports_and_repairs_a_flipped_byte(emu_factory, mirror_factory):
    emu, mirror, entry = cached_big_file(emu_factory, mirror_factory)
    sha, size = entry["sha256"], entry["size"]
    mirror.stop()
    clean = cli_verify(mirror)
    assert clean.returncode == 0 and "problem" not in clean.stdout, clean.stdout

    path = blob_path(mirror.cache_dir, sha)
    h = BlobHeader(path)
    bad = 3
    flip_byte(path, h.data_offset + bad * h.block_size + 4321)

    check = cli_verify(mirror)
    assert check.returncode == 1, (check.returncode, check.stdout, check.stderr)
    problems = [line for line in check.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, check.stdout
    assert sha in problems[0] and f"block {bad} " in problems[0], problems
    assert BlobHeader(path).present == set(range(h.block_count)), "verify without --repair changed the file"

    repair = cli_verify(mirror, repair=True)
    assert repair.returncode == 0, (repair.returncode, repair.stdout, repair.stderr)
    assert "1 blocks invalidated" in repair.stdout, repair.stdout
    assert BlobHeader(path).present == set(range(h.block_count)) - {bad}
    again = cli_verify(mirror)
    assert again.returncode == 0 and "problem" not in again.stdout, again.stdout

    mirror.start()
    mark = cdn_mark(emu)
    assert_identical(download(mirror), entry, "download after the repair")
    reqs = cdn_requests(emu, sha, size, mark)
    assert blocks_asked(reqs, h.block_size) == {bad}, reqs
    assert sum(r.sent for r in reqs) == h.block_size, reqs
