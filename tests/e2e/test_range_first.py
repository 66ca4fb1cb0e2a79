"""Range-first (issue 11): the fetch for a range in a cold block starts at the range's page, and
the rest of the block follows; presence and checksums stay crash-safe."""

from __future__ import annotations

import hashlib
import signal
import time

import requests

from helpers import MiB, BlobHeader, blob_path, wait_until

BIG = ("acme/big-model", "main", "big.bin")
RATE = 4 * MiB            # CDN bytes/s per connection: an 8 MiB block takes 2 s
BLOCK = 8 * MiB           # the default block size (pages are 1 MiB)


def range_start(req: dict) -> int:
    """Where an emulator CDN request's range starts (0 without a range)."""
    rng = req.get("range") or "bytes=0-"
    return int(rng.removeprefix("bytes=").split("-")[0] or 0)


def first_byte(get) -> tuple[float, int, bytes, requests.Response]:
    """Start `get()` (a streaming request); returns (seconds to the first body byte, the
    emulator's CDN bytes at that moment via `cdn_bytes`, the first chunk, the response)."""
    t0 = time.monotonic()
    r, cdn_bytes = get()
    chunk = next(r.iter_content(64 * 1024))
    return time.monotonic() - t0, cdn_bytes(), chunk, r


def test_range_at_the_end_of_a_cold_block_starts_at_its_page(emu_factory, mirror_factory):
    emu = emu_factory(big_size=2 * BLOCK, extra=("--cdn-rate", str(RATE)))
    mirror = mirror_factory(emu)
    entry = emu.file(*BIG)
    sha, size = entry["sha256"], entry["size"]
    content = emu.content(sha)
    start, end = BLOCK - 100 * 1024, BLOCK - 1            # the last 100 KiB of block 0
    rng = {"Range": f"bytes={start}-{end}"}

    # Direct (hub 302 -> rate-limited CDN), for the baseline.
    direct_s, _, _, r = first_byte(lambda: (requests.get(
        emu.hub + f"/{BIG[0]}/resolve/{BIG[1]}/{BIG[2]}", headers=rng, stream=True, timeout=60),
        lambda: 0))
    r.close()
    time.sleep(0.5)                                       # the direct response has ended

    mark = len(emu.stats()["cdn_requests"])
    before = emu.cdn_bytes_for(sha)
    page = (start // MiB) * MiB

    def before_the_page() -> int:
        """CDN bytes fetched so far of block 0 before the range's page."""
        return sum(req["bytes"] for req in emu.stats()["cdn_requests"][mark:]
                   if sha in req["path"] and range_start(req) < page)

    mirror_s, at_first_byte, chunk, r = first_byte(lambda: (
        mirror.resolve("GET", *BIG, headers=rng, stream=True, timeout=60), before_the_page))
    body = chunk + b"".join(r.iter_content(1 << 20))
    assert r.status_code == 206 and body == content[start:end + 1]

    # Without range-first the first byte waits for the block's first 7 MiB (about 2 s at
    # 4 MiB/s); with it, only for the range's page, fetched first.
    assert at_first_byte <= 256 * 1024, f"{at_first_byte} bytes before the page fetched first"
    assert mirror_s < direct_s + 1.0, f"first byte after {mirror_s:.3f} s, direct {direct_s:.3f} s"
    firsts = [req for req in emu.stats()["cdn_requests"][mark:]
              if sha in req["path"] and range_start(req) < BLOCK]
    assert firsts and firsts[0]["range"].startswith(f"bytes={page}-"), firsts[:3]

    # The rest of the block follows, and the whole file is each byte fetched once, correct.
    path = blob_path(mirror.cache_dir, sha)
    wait_until(lambda: 0 in BlobHeader(path).present, 30, what="block 0 to be committed")
    assert BlobHeader(path).content()[:BLOCK] == content[:BLOCK]
    full = mirror.resolve("GET", *BIG, timeout=60)
    assert full.status_code == 200 and hashlib.sha256(full.content).hexdigest() == sha
    wait_until(lambda: BlobHeader(path).complete, 30, what="the file to be complete")
    assert emu.cdn_bytes_for(sha) - before == size, "some bytes were fetched twice"


def test_block_killed_between_its_two_parts_is_not_present_and_is_fetched_again(
        emu_factory, mirror_factory):
    emu = emu_factory(big_size=2 * BLOCK, extra=("--cdn-rate", str(RATE)))
    mirror = mirror_factory(emu)
    entry = emu.file(*BIG)
    sha = entry["sha256"]
    content = emu.content(sha)
    start = BLOCK - MiB                                   # the last page of block 0
    with mirror.resolve("GET", *BIG, headers={"Range": f"bytes={start}-"}, stream=True,
                        timeout=60) as r:
        assert r.status_code == 206
        next(r.iter_content(64 * 1024))                   # the part from the page is arriving
        mirror.stop(signal.SIGKILL)                       # before the block's first 7 MiB are in
    path = blob_path(mirror.cache_dir, sha)
    h = BlobHeader(path)
    assert 0 not in h.present, f"block 0 marked present with only part of it fetched: {h}"

    mirror.start()
    r = mirror.resolve("GET", *BIG, headers={"Range": f"bytes=0-{BLOCK - 1}"}, timeout=60)
    assert r.status_code == 206 and r.content == content[:BLOCK]
    wait_until(lambda: 0 in BlobHeader(path).present, 30, what="block 0 to be committed")
    assert BlobHeader(path).content()[:BLOCK] == content[:BLOCK]
