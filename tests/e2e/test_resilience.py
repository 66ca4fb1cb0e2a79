"""Upstream down or failing (stale-if-error, 5xx never 4xx), upstream chain failover, and
interrupted upstream transfers."""

from __future__ import annotations

import time

import pytest

from helpers import MiB, free_port, sha256

WARM = [
    ("model", "acme/tiny-model", "main", "config.json"),
    ("model", "acme/tiny-model", "main", "model.safetensors"),
    ("model", "acme/tiny-model", "main", "sub/dir/notes.txt"),
    ("model", "acme/tiny-model", "v1.0", "config.json"),
    ("dataset", "acme/tiny-dataset", "main", "data/test.csv"),
    ("model", "tinyllama", "main", "model.bin"),
]
WARM_API = ["/api/models/acme/tiny-model", "/api/models/acme/tiny-model/revision/main",
            "/api/models/acme/tiny-model/tree/main?recursive=true&expand=false"]


def warm(m, emu) -> dict:
    seen = {}
    for repo_type, repo, rev, path in WARM:
        r = m.resolve("GET", repo, rev, path, repo_type)
        assert r.status_code == 200, (repo, rev, path, r.status_code)
        assert sha256(r.content) == emu.file(repo, rev, path)["sha256"]
        seen[(repo, rev, path)] = r.headers["X-Repo-Commit"]
    for api in WARM_API:
        r = m.get(api)
        assert r.status_code == 200, api
        seen[api] = r.json()
    return seen


def check_cached_still_served(m, emu, seen: dict, phase: str) -> None:
    failures = []
    for repo_type, repo, rev, path in WARM:
        for method in ("HEAD", "GET"):
            r = m.resolve(method, repo, rev, path, repo_type)
            where = f"[{phase}] {method} {repo}@{rev}/{path}"
            if r.status_code != 200:
                failures.append(f"{where}: {r.status_code} {r.headers.get('X-Error-Message', '')[:200]}")
                continue
            if r.headers.get("X-Repo-Commit") != seen[(repo, rev, path)]:
                failures.append(f"{where}: X-Repo-Commit {r.headers.get('X-Repo-Commit')}")
            if r.headers.get("Content-Length") != str(emu.file(repo, rev, path)["size"]):
                failures.append(f"{where}: Content-Length {r.headers.get('Content-Length')}")
            if method == "GET" and sha256(r.content) != emu.file(repo, rev, path)["sha256"]:
                failures.append(f"{where}: wrong bytes")
    for api in WARM_API:
        r = m.get(api)
        if r.status_code != 200 or r.json() != seen[api]:
            failures.append(f"[{phase}] {api}: {r.status_code}")
    assert not failures, "\n".join(failures)


def check_uncached_is_5xx(m, phase: str) -> None:
    failures = []
    for method, path in (("GET", "/acme/tiny-model/resolve/main/tokenizer.json"),
                         ("HEAD", "/acme/tiny-model/resolve/dev/extra.bin"),
                         ("GET", "/acme/big-model/resolve/main/big.bin"),
                         ("GET", "/api/models/acme/many-files/tree/main"),
                         ("GET", "/spaces/acme/tiny-space/resolve/main/app.py")):
        t0 = time.monotonic()
        r = m.request(method, path)
        took = time.monotonic() - t0
        if r.status_code not in (502, 503, 504):
            failures.append(f"[{phase}] {method} {path}: {r.status_code} (want 502/503/504) "
                            f"{r.headers.get('X-Error-Code')} {r.headers.get('X-Error-Message', '')[:150]}")
        if took > 15:
            failures.append(f"[{phase}] {method} {path}: took {took:.1f}s")
    assert not failures, "\n".join(failures)


def test_upstream_stopped_serves_cached_files_and_metadata(own_emu, mirror_factory):
    m = mirror_factory(own_emu, revision_ttl="1s")
    seen = warm(m, own_emu)
    own_emu.stop()
    time.sleep(1.3)             # every branch mapping is now past its TTL: stale-if-error must kick in
    check_cached_still_served(m, own_emu, seen, "upstream stopped")
    check_uncached_is_5xx(m, "upstream stopped")
    assert m.running


@pytest.mark.parametrize("fault", [{"kind": "status", "status": 503}, {"kind": "status", "status": 500},
                                   {"kind": "down"}], ids=["503", "500", "connection-dropped"])
def test_failing_upstream_serves_cached_files_and_metadata(own_emu, mirror_factory, fault):
    m = mirror_factory(own_emu, revision_ttl="1s")
    seen = warm(m, own_emu)
    own_emu.fault(host="any", **fault)
    time.sleep(1.3)
    check_cached_still_served(m, own_emu, seen, f"upstream fault {fault}")
    check_uncached_is_5xx(m, f"upstream fault {fault}")
    assert own_emu.stats()["requests"] > 0, "the mirror should have tried the upstream"


def test_failover_when_the_first_upstream_is_a_closed_port(emu, mirror_factory):
    dead = f"http://127.0.0.1:{free_port()}"
    m = mirror_factory([dead, emu.hub])
    for repo, rev, path in (("acme/tiny-model", "main", "config.json"),
                            ("acme/tiny-model", "main", "model.safetensors"),
                            ("acme/tiny-model", "refs/pr/1", "config.json")):
        r = m.resolve("GET", repo, rev, path)
        assert r.status_code == 200, (path, r.status_code, r.headers.get("X-Error-Message"))
        assert r.headers["X-Repo-Commit"] == emu.commit(repo, rev)
        assert sha256(r.content) == emu.file(repo, rev, path)["sha256"]
    info = m.get("/api/models/acme/tiny-model/revision/main")
    assert info.status_code == 200 and info.json()["sha"] == emu.commit("acme/tiny-model", "main")
    assert m.get("/api/models/acme/tiny-model/refs").status_code == 200


def test_failover_when_the_first_upstream_answers_503(emu, own_emu, mirror_factory):
    own_emu.fault(host="any", kind="status", status=503)
    m = mirror_factory([own_emu, emu])
    for path in ("config.json", "model.safetensors", "tokenizer.json"):
        r = m.resolve("GET", "acme/tiny-model", "main", path)
        assert r.status_code == 200, (path, r.status_code, r.headers.get("X-Error-Message"))
        assert sha256(r.content) == emu.file("acme/tiny-model", "main", path)["sha256"]
    tree = m.get("/api/models/acme/many-files/tree/main?recursive=true")
    assert tree.status_code == 200
    assert own_emu.stats()["requests"] > 0, "the first upstream was never tried"
    assert emu.stats()["by_route"]["cdn"] >= 1


def test_cut_cdn_transfer_is_resumed_by_the_mirror(emu_factory, mirror_factory):
    e = emu_factory(big_size=24 * MiB)
    entry = e.file("acme/big-model", "main", "big.bin")
    e.fault(kind="cut", host="cdn", after_bytes=3 * MiB, count=1)
    m = mirror_factory(e, fill={"segment": "8MiB"})
    r = m.resolve("GET", "acme/big-model", "main", "big.bin")
    assert r.status_code == 200
    body = r.content
    assert len(body) == entry["size"], f"got {len(body)} of {entry['size']} bytes"
    assert sha256(body) == entry["sha256"]
    assert [f["applied"] for f in e.faults()] == [1], "the cut fault never fired"
    again = m.resolve("GET", "acme/big-model", "main", "big.bin")
    assert sha256(again.content) == entry["sha256"]


def test_bad_content_range_from_upstream_is_never_served(emu_factory, mirror_factory):
    """A CDN that answers a Range with the wrong bytes (shifted Content-Range) must not poison the cache."""
    e = emu_factory(big_size=16 * MiB)
    entry = e.file("acme/big-model", "main", "big.bin")
    e.fault(kind="bad_content_range", host="cdn", count=1)
    m = mirror_factory(e, fill={"segment": "4MiB"})
    r = m.resolve("GET", "acme/big-model", "main", "big.bin")
    if r.status_code == 200 and len(r.content) == entry["size"]:
        assert sha256(r.content) == entry["sha256"], "corrupt bytes served"
    again = m.resolve("GET", "acme/big-model", "main", "big.bin")
    assert again.status_code == 200
    assert sha256(again.content) == entry["sha256"]


def test_ignored_range_from_upstream_still_gives_correct_partial_answer(emu_factory, mirror_factory):
    e = emu_factory(big_size=16 * MiB)
    entry = e.file("acme/big-model", "main", "big.bin")
    e.fault(kind="ignore_range", host="cdn")
    m = mirror_factory(e, fill={"segment": "4MiB"})
    n = entry["size"]
    r = m.resolve("GET", "acme/big-model", "main", "big.bin", headers={"Range": f"bytes={n - 100}-{n - 1}"})
    assert r.status_code == 206
    assert r.content == e.http.get(f"{e.hub}/_emulator/content/{entry['sha256']}",
                                   headers={"Range": f"bytes={n - 100}-{n - 1}"}, timeout=30).content
    full = m.resolve("GET", "acme/big-model", "main", "big.bin")
    assert sha256(full.content) == entry["sha256"]
