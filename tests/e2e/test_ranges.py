"""Range requests on resolve (RFC 9110, R5): warm and cold, regular and LFS files."""

from __future__ import annotations

import time

import pytest

from helpers import MiB

FILES = {
    "regular": ("acme/tiny-model", "main", "tokenizer.json"),
    "lfs": ("acme/tiny-model", "main", "model.safetensors"),
}


def range_cases(n: int):
    """(Range header, expected status, expected inclusive (start, end) or None)."""
    return [
        ("bytes=10-99", 206, (10, 99)),
        ("bytes=100-", 206, (100, n - 1)),
        ("bytes=-100", 206, (n - 100, n - 1)),
        ("bytes=0-0", 206, (0, 0)),
        (f"bytes={n - 1}-{n - 1}", 206, (n - 1, n - 1)),
        (f"bytes={n - 10}-{n + 1000}", 206, (n - 10, n - 1)),       # end past EOF: clamped
        (f"bytes=-{n + 50}", 206, (0, n - 1)),                       # suffix longer than the file
        (f"bytes={n}-", 416, None),
        (f"bytes={n + 5}-{n + 10}", 416, None),
    ]


@pytest.fixture(scope="module")
def expected_bytes(session_emulator):
    return {kind: session_emulator.file_bytes(*spec) for kind, spec in FILES.items()}


@pytest.mark.parametrize("kind", list(FILES))
@pytest.mark.parametrize("state", ["cold", "warm"])
def test_single_ranges(mirror, emu, expected_bytes, kind, state):
    repo, rev, path = FILES[kind]
    data = expected_bytes[kind]
    n = len(data)
    if state == "warm":
        full = mirror.resolve("GET", repo, rev, path)
        assert full.status_code == 200 and full.content == data
    failures = []
    for header, status, span in range_cases(n):
        r = mirror.resolve("GET", repo, rev, path, headers={"Range": header})
        got = (r.status_code, r.headers.get("Content-Range"), r.headers.get("Content-Length"))
        if status == 206:
            a, b = span
            want = (206, f"bytes {a}-{b}/{n}", str(b - a + 1))
            if got != want or r.content != data[a:b + 1]:
                failures.append(f"{header}: got {got} ({len(r.content)} bytes), want {want}")
            elif r.headers.get("X-Repo-Commit") != emu.commit(repo, rev):
                failures.append(f"{header}: X-Repo-Commit {r.headers.get('X-Repo-Commit')}")
        else:
            if r.status_code != 416 or r.headers.get("Content-Range") != f"bytes */{n}":
                failures.append(f"{header}: got {got}, want 416 with 'bytes */{n}'")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", list(FILES))
def test_if_range(shared_mirror, emu, expected_bytes, kind):
    repo, rev, path = FILES[kind]
    data = expected_bytes[kind]
    entry = emu.file(repo, rev, path)
    etag = f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"'
    ok = shared_mirror.resolve("GET", repo, rev, path, headers={"Range": "bytes=5-14", "If-Range": etag})
    assert ok.status_code == 206, dict(ok.headers)
    assert ok.headers["Content-Range"] == f"bytes 5-14/{len(data)}"
    assert ok.content == data[5:15]
    stale = shared_mirror.resolve("GET", repo, rev, path,
                                  headers={"Range": "bytes=5-14", "If-Range": '"0000000000000000000000000000000000000000"'})
    assert stale.status_code == 200, dict(stale.headers)
    assert "Content-Range" not in stale.headers
    assert stale.content == data


def test_head_with_range_reports_the_whole_file_or_the_range(shared_mirror, emu):
    entry = emu.file("acme/tiny-model", "main", "model.safetensors")
    r = shared_mirror.resolve("HEAD", "acme/tiny-model", "main", "model.safetensors",
                              headers={"Range": "bytes=0-0"})
    assert r.status_code in (200, 206), r.status_code
    if r.status_code == 206:
        assert r.headers["Content-Range"] == f"bytes 0-0/{entry['size']}"
    else:
        assert r.headers["Content-Length"] == str(entry["size"])
    assert r.headers["X-Repo-Commit"] == emu.commit("acme/tiny-model", "main")


@pytest.mark.parametrize("header", ["tail", "suffix", "zero"])
def test_cold_range_near_the_end_of_a_big_lfs_file(mirror, emu, header):
    entry = emu.file("acme/big-model", "main", "big.bin")
    n = entry["size"]
    start, end = {"tail": (n - 1000, n - 1), "suffix": (n - 4096, n - 1), "zero": (0, 0)}[header]
    value = {"tail": f"bytes={start}-{end}", "suffix": "bytes=-4096", "zero": "bytes=0-0"}[header]
    expected = emu.http.get(f"{emu.hub}/_emulator/content/{entry['sha256']}",
                            headers={"Range": f"bytes={start}-{end}"}, timeout=30).content
    t0 = time.monotonic()
    r = mirror.resolve("GET", "acme/big-model", "main", "big.bin", headers={"Range": value})
    elapsed = time.monotonic() - t0
    assert r.status_code == 206, dict(r.headers)
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{n}"
    assert r.content == expected
    assert elapsed < 10, f"R10: cold ranged GET took {elapsed:.1f}s"


def test_cold_range_fetches_only_the_blocks_it_needs(emu, mirror_factory):
    """on_demand without read-ahead: a tail range of a cold 48 MiB file moves ~one block, not the file."""
    m = mirror_factory(emu, fill={"mode": "on_demand", "read_ahead": 0})
    entry = emu.file("acme/big-model", "main", "big.bin")
    n = entry["size"]
    assert n >= 40 * MiB, "the session emulator's big.bin should be large for this test"
    r = m.resolve("GET", "acme/big-model", "main", "big.bin", headers={"Range": f"bytes={n - 100}-{n - 1}"})
    assert r.status_code == 206
    assert r.content == emu.http.get(f"{emu.hub}/_emulator/content/{entry['sha256']}",
                                     headers={"Range": f"bytes={n - 100}-{n - 1}"}, timeout=30).content
    time.sleep(1.0)
    stats = emu.stats()
    moved = emu.cdn_bytes_for(entry["sha256"], stats)
    assert 0 < moved <= 16 * MiB, (moved, [e for e in stats["cdn_requests"]])
    ranged = [e for e in stats["cdn_requests"] if e["method"] == "GET" and e["range"]]
    assert ranged, "the mirror fetched the tail without a Range request"
