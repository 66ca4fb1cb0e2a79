"""The fill engine (issue 3): each block fetched from upstream once, range-aware, resumable,
never writing bytes at the wrong offset, completing files in the background.

Upstream traffic is counted by the emulator's CDN (`cdn_requests`, with the Range of each).
"""

from __future__ import annotations

import re
import threading
import time

from helpers import MiB, resolve_path, stream_sha256, wait_until

BIG = ("acme/big-model", "main", "big.bin")


def big(emu) -> dict:
    return emu.file(*BIG)


def download(mirror, headers=None, stop_after=None) -> tuple[int, str, int]:
    """GET big.bin through the mirror; returns (status, sha256, bytes read)."""
    return stream_sha256(mirror.url + resolve_path(*BIG), headers, stop_after)


def cdn_ranges(emu, sha: str) -> list[tuple[int, int]]:
    """(start, bytes sent) of every CDN request for the blob, in arrival order."""
    out = []
    for req in emu.stats()["cdn_requests"]:
        if sha not in req["path"] or req["method"] != "GET":
            continue
        m = re.match(r"bytes=(\d+)-", req.get("range") or "")
        out.append((int(m.group(1)) if m else 0, req["bytes"]))
    return out


def metric(mirror, name: str) -> float:
    text = mirror.metrics_text()
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} missing from /metrics:\n{text}"
    return float(m.group(1))


def test_concurrent_cold_clients_fetch_each_block_once(emu_factory, mirror_factory):
    emu = emu_factory(big_size=48 * MiB)
    mirror = mirror_factory(emu)
    entry = big(emu)
    results: list = []

    def client():
        results.append(download(mirror))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 8
    for status, sha, read in results:
        assert (status, sha, read) == (200, entry["sha256"], entry["size"])
    wait_until(lambda: metric(mirror, "hubcache_verified_files_total") >= 1, 30,
               what="background completion and verification")
    fetched = emu.cdn_bytes_for(entry["sha256"])
    assert fetched <= entry["size"] * 1.02, f"upstream sent {fetched} bytes for a {entry['size']}-byte file"


def test_range_at_end_of_cold_file_does_not_fetch_the_start(emu_factory, mirror_factory):
    emu = emu_factory(big_size=32 * MiB)
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"},
                            fill={"mode": "on_demand", "read_ahead": "0"})
    entry = big(emu)
    size = entry["size"]
    r = mirror.resolve("GET", *BIG, headers={"Range": f"bytes={size - 1000}-"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {size - 1000}-{size - 1}/{size}"
    assert r.content == emu.content(entry["sha256"])[size - 1000:]
    ranges = cdn_ranges(emu, entry["sha256"])
    assert ranges, "the mirror fetched nothing from the CDN"
    assert min(start for start, _ in ranges) >= size - MiB, f"fetched from the start: {ranges}"
    assert sum(sent for _, sent in ranges) <= MiB


def test_ranged_request_is_served_before_the_rest_of_a_complete_fill(emu_factory, mirror_factory):
    emu = emu_factory(big_size=32 * MiB)
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"}, fill={"mode": "complete"})
    entry = big(emu)
    size = entry["size"]
    r = mirror.resolve("GET", *BIG, headers={"Range": f"bytes={size - 10}-"})
    assert r.status_code == 206 and len(r.content) == 10
    first_start = cdn_ranges(emu, entry["sha256"])[0][0]
    assert first_start >= size - MiB, "the block the client needed was not fetched first"


def test_broken_upstream_stream_is_resumed_from_the_last_byte(emu_factory, mirror_factory):
    emu = emu_factory(big_size=16 * MiB)
    mirror = mirror_factory(emu, fill={"segment": "16MiB", "connections_per_file": 1})
    entry = big(emu)
    emu.fault(kind="cut", after_bytes=5_000_000, host="cdn", count=1)
    status, sha, read = download(mirror)
    assert (status, sha, read) == (200, entry["sha256"], entry["size"])
    starts = [start for start, _ in cdn_ranges(emu, entry["sha256"])]
    assert starts[0] == 0
    assert 5_000_000 in starts, f"no resume at the byte where the stream broke: {starts}"
    assert emu.cdn_bytes_for(entry["sha256"]) <= entry["size"] * 1.02
    assert metric(mirror, "hubcache_upstream_resumes_total") >= 1


def test_mismatched_content_range_is_rejected_not_written(emu_factory, mirror_factory):
    emu = emu_factory(big_size=16 * MiB)
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"},
                            fill={"segment": "4MiB", "connections_per_file": 1})
    entry = big(emu)
    emu.fault(kind="bad_content_range", host="cdn", count=2)
    status, sha, read = download(mirror)
    assert (status, sha, read) == (200, entry["sha256"], entry["size"])
    assert metric(mirror, "hubcache_upstream_rejected_responses_total") >= 2
    # Served again from disk: still identical (nothing was written at a wrong offset).
    assert download(mirror)[1] == entry["sha256"]


def test_whole_file_answer_to_a_ranged_request_is_rejected(emu_factory, mirror_factory):
    emu = emu_factory(big_size=16 * MiB)
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"}, fill={"mode": "on_demand"})
    entry = big(emu)
    emu.fault(kind="ignore_range", host="cdn", count=1)
    offset = 9 * MiB + 123
    r = mirror.resolve("GET", *BIG, headers={"Range": f"bytes={offset}-{offset + 99}"})
    assert r.status_code == 206
    assert r.content == emu.content(entry["sha256"])[offset:offset + 100]
    assert metric(mirror, "hubcache_upstream_rejected_responses_total") >= 1


def test_client_that_disconnects_does_not_cancel_the_fill(emu_factory, mirror_factory):
    emu = emu_factory(big_size=24 * MiB, extra=("--cdn-rate", str(8 * MiB)))
    mirror = mirror_factory(emu, fill={"mode": "on_demand", "read_ahead": "0"})
    entry = big(emu)
    results = []
    waiter = threading.Thread(target=lambda: results.append(download(mirror)))
    status, _, read = download(mirror, stop_after=2 * MiB)  # leaves after 2 MiB
    waiter.start()
    waiter.join(120)
    assert status == 200 and read >= 2 * MiB
    assert results and results[0][1] == entry["sha256"]
    assert emu.cdn_bytes_for(entry["sha256"]) <= entry["size"] * 1.02


def test_complete_mode_finishes_a_started_file_in_the_background(emu_factory, mirror_factory):
    emu = emu_factory(big_size=24 * MiB)
    mirror = mirror_factory(emu, fill={"mode": "complete"})
    entry = big(emu)
    r = mirror.resolve("GET", *BIG, headers={"Range": "bytes=0-1023"})
    assert r.status_code == 206
    wait_until(lambda: metric(mirror, "hubcache_verified_files_total") >= 1, 60,
               what="the file to complete in the background")
    emu.stop()
    status, sha, _ = download(mirror)
    assert (status, sha) == (200, entry["sha256"])


def test_on_demand_mode_fetches_only_what_was_asked(emu_factory, mirror_factory):
    emu = emu_factory(big_size=32 * MiB)
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"},
                            fill={"mode": "on_demand", "read_ahead": "1MiB"})
    entry = big(emu)
    r = mirror.resolve("GET", *BIG, headers={"Range": "bytes=0-1023"})
    assert r.status_code == 206
    time.sleep(1.0)
    assert emu.cdn_bytes_for(entry["sha256"]) <= 2 * MiB


def test_upstream_that_cannot_deliver_gets_a_gateway_error_not_a_broken_200(emu_factory, mirror_factory):
    emu = emu_factory(big_size=8 * MiB)
    mirror = mirror_factory(emu)
    head = mirror.resolve("HEAD", *BIG)  # metadata is cached; the bytes are not
    assert head.status_code == 200
    emu.fault(kind="status", status=503, host="cdn")
    r = mirror.resolve("GET", *BIG, timeout=120)
    assert r.status_code in (502, 503, 504), r.status_code


def test_second_download_is_served_from_disk(emu_factory, mirror_factory):
    emu = emu_factory(big_size=8 * MiB)
    mirror = mirror_factory(emu)
    entry = big(emu)
    assert download(mirror)[1] == entry["sha256"]
    wait_until(lambda: metric(mirror, "hubcache_verified_files_total") >= 1, 30, what="verification")
    before = emu.cdn_bytes_for(entry["sha256"])
    assert download(mirror)[1] == entry["sha256"]
    assert emu.cdn_bytes_for(entry["sha256"]) == before


def test_upstream_that_keeps_breaking_is_left_for_the_next_in_the_chain(emu_factory, mirror_factory):
    first = emu_factory(big_size=16 * MiB)
    second = emu_factory(big_size=16 * MiB)  # same seed: same repos, commits and blobs
    mirror = mirror_factory([first, second], fill={"connections_per_file": 1, "segment": "16MiB"})
    entry = big(first)
    first.fault(kind="cut", after_bytes=1_000_000, host="cdn")  # every CDN answer breaks off
    status, sha, read = download(mirror)
    assert (status, sha, read) == (200, entry["sha256"], entry["size"])
    assert second.cdn_bytes_for(entry["sha256"]) > 0, "the second upstream was never used"
    served = first.cdn_bytes_for(entry["sha256"]) + second.cdn_bytes_for(entry["sha256"])
    assert served <= entry["size"] * 1.02, "resumed streams refetched bytes already received"
