"""Resolve HEAD/GET (R1, R2, R3, R9), every revision and repo form, redirects followed by the mirror."""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import urlsplit

import pytest

from helpers import VALID, MiB, git_oid, resolve_path, sha256

HEX40 = re.compile(r"[0-9a-f]{40}")
XET_LINK_RELS = ("xet-auth", "xet-reconstruction-info")


def assert_file_response(r, entry: dict, commit: str, method: str = "GET") -> None:
    """R1/R2: the headers of a final 200 for a resolve, and (GET) the exact bytes."""
    h = r.headers
    assert r.status_code == 200, (r.status_code, dict(h), r.content[:300])
    assert "Location" not in h, dict(h)
    assert HEX40.fullmatch(h.get("X-Repo-Commit", "")), dict(h)
    assert h["X-Repo-Commit"] == commit
    if entry["lfs"]:
        assert h.get("ETag") == f'"{entry["sha256"]}"', dict(h)
        assert h.get("X-Linked-Etag") == f'"{entry["sha256"]}"', dict(h)
        assert h.get("X-Linked-Size") == str(entry["size"]), dict(h)
    else:
        assert h.get("ETag") == f'"{entry["oid"]}"', dict(h)
    assert h.get("Content-Length") == str(entry["size"]), dict(h)
    assert h.get("Accept-Ranges") == "bytes", dict(h)
    assert h.get("Content-Encoding", "identity") == "identity", dict(h)
    if method == "GET":
        assert len(r.content) == entry["size"]
        assert sha256(r.content) == entry["sha256"]
        if not entry["lfs"]:
            assert git_oid(r.content) == entry["oid"]


def raw_head(base_url: str, path: str, headers: dict | None = None) -> tuple[bytes, bytes]:
    """HEAD over a raw socket with Connection: close -> (header block, anything sent after it)."""
    u = urlsplit(base_url)
    lines = [f"HEAD {path} HTTP/1.1", f"Host: {u.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = b""
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            if len(data) > 1 << 20:
                break
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete header block: {data[:500]!r}"
    return head, rest


# --------------------------------------------------------------------------------------------
# R1 / R2
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["config.json", "model.safetensors"], ids=["regular", "lfs"])
def test_head_and_get_carry_the_file_metadata(mirror, emu, path):
    entry = emu.file("acme/tiny-model", "main", path)
    commit = emu.commit("acme/tiny-model", "main")
    head = mirror.resolve("HEAD", "acme/tiny-model", "main", path)
    assert_file_response(head, entry, commit, "HEAD")
    get = mirror.resolve("GET", "acme/tiny-model", "main", path)
    assert_file_response(get, entry, commit, "GET")
    # R1: HEAD and GET share one metadata source (a warm HEAD too)
    again = mirror.resolve("HEAD", "acme/tiny-model", "main", path)
    for name in ("X-Repo-Commit", "ETag", "Content-Length", "X-Linked-Etag", "X-Linked-Size"):
        assert head.headers.get(name) == get.headers.get(name) == again.headers.get(name), name


@pytest.mark.parametrize("path", ["config.json", "model.safetensors", "empty.txt"])
def test_head_has_no_body_and_full_content_length(shared_mirror, emu, path):
    entry = emu.file("acme/tiny-model", "main", path)
    head, rest = raw_head(shared_mirror.url, resolve_path("acme/tiny-model", "main", path),
                          {"Accept-Encoding": "identity"})
    assert head.startswith(b"HTTP/1.1 200"), head
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.decode().partition(":") for line in head.split(b"\r\n")[1:])}
    assert headers.get("content-length") == str(entry["size"]), headers
    assert rest == b"", f"HEAD answer carried {len(rest)} body bytes"


def test_head_of_uncached_lfs_file_does_not_download_it(mirror, emu):
    big = emu.file("acme/big-model", "main", "big.bin")
    r = mirror.resolve("HEAD", "acme/big-model", "main", "big.bin")
    assert r.status_code == 200, r.headers
    assert r.headers["Content-Length"] == str(big["size"])
    assert r.headers["ETag"] == f'"{big["sha256"]}"'
    time.sleep(1.5)          # a background fill would have started by now
    stats = emu.stats()
    cdn_gets = [e for e in stats["cdn_requests"] if big["sha256"] in e["path"] and e["method"] == "GET"]
    assert emu.cdn_bytes_for(big["sha256"], stats) == 0, cdn_gets
    assert cdn_gets == [], cdn_gets
    assert stats["hub_file_bytes"] == 0


def test_resolve_responses_are_never_compressed(shared_mirror, emu):
    entry = emu.file("acme/tiny-model", "main", "tokenizer.json")
    r = shared_mirror.resolve("GET", "acme/tiny-model", "main", "tokenizer.json",
                              headers={"Accept-Encoding": "gzip, deflate, br"}, stream=True)
    raw = r.raw.read(decode_content=False)
    assert r.status_code == 200
    assert r.headers.get("Content-Encoding", "identity") == "identity", dict(r.headers)
    assert sha256(raw) == entry["sha256"]


# --------------------------------------------------------------------------------------------
# every revision / repo / path form
# --------------------------------------------------------------------------------------------

FORMS = [
    # (repo type, repo, revision, path)
    ("model", "acme/tiny-model", "main", "config.json"),
    ("model", "acme/tiny-model", "main", "model.safetensors"),
    ("model", "acme/tiny-model", "dev", "extra.bin"),
    ("model", "acme/tiny-model", "dev", "config.json"),
    ("model", "acme/tiny-model", "v1.0", "config.json"),
    ("model", "acme/tiny-model", "refs/pr/1", "config.json"),
    ("model", "acme/tiny-model", "@sha:v1.0", "config.json"),
    ("model", "acme/tiny-model", "@sha:refs/pr/1", "model.safetensors"),
    ("model", "acme/tiny-model", "main", "sub/dir/notes.txt"),
    ("model", "acme/tiny-model", "main", "weird name +#%é.txt"),
    ("model", "acme/tiny-model", "main", "empty.txt"),
    ("model", "tinyllama", "main", "config.json"),
    ("model", "tinyllama", "main", "model.bin"),
    ("dataset", "acme/tiny-dataset", "main", "data/test.csv"),
    ("dataset", "acme/tiny-dataset", "main", "data/train.parquet"),
    ("dataset", "acme/tiny-dataset", "refs/convert/parquet", "README.md"),
    ("space", "acme/tiny-space", "main", "app.py"),
    ("space", "acme/tiny-space", "main", "README.md"),
]


@pytest.mark.parametrize("repo_type,repo,rev,path", FORMS,
                         ids=[f"{t}:{r}@{v}:{p}" for t, r, v, p in FORMS])
def test_every_revision_and_repo_form_resolves(shared_mirror, emu, repo_type, repo, rev, path):
    if rev.startswith("@sha:"):
        rev = emu.commit(repo, rev[len("@sha:"):])
    commit = emu.commit(repo, rev)
    entry = emu.file(repo, rev, path)
    head = shared_mirror.resolve("HEAD", repo, rev, path, repo_type)
    assert_file_response(head, entry, commit, "HEAD")
    get = shared_mirror.resolve("GET", repo, rev, path, repo_type)
    assert_file_response(get, entry, commit, "GET")


def test_revisions_resolve_to_distinct_commits(shared_mirror, emu):
    """main, dev, v1.0 and refs/pr/1 each have their own config.json content and commit."""
    seen = {}
    for rev in ("main", "dev", "v1.0", "refs/pr/1"):
        r = shared_mirror.resolve("GET", "acme/tiny-model", rev, "config.json")
        assert r.status_code == 200
        seen[rev] = (r.headers["X-Repo-Commit"], r.content)
        assert r.headers["X-Repo-Commit"] == emu.commit("acme/tiny-model", rev)
    assert len({c for c, _ in seen.values()}) == 4
    assert seen["v1.0"][1] == b'{"model_type":"tiny","v":1}'
    assert seen["refs/pr/1"][1] == b'{"model_type":"tiny","v":4}'


# --------------------------------------------------------------------------------------------
# redirects are followed by the mirror (R3, R9)
# --------------------------------------------------------------------------------------------

def test_lfs_cdn_redirect_is_followed_and_authorization_never_reaches_the_cdn(mirror, emu):
    entry = emu.file("acme/tiny-model", "main", "model.safetensors")
    cdn = urlsplit(emu.cdn).netloc
    for method in ("HEAD", "GET"):
        r = mirror.resolve(method, "acme/tiny-model", "main", "model.safetensors", headers=VALID)
        assert_file_response(r, entry, emu.commit("acme/tiny-model", "main"), method)
        for name, value in r.headers.items():
            assert cdn not in value, f"CDN host leaked in {name}: {value}"
            assert "Signature=" not in value, f"signed URL leaked in {name}: {value}"
    stats = emu.stats()
    assert stats["auth_leaks"] == 0
    cdn_hits = [e for e in stats["recent"] if e["host"] == "cdn"]
    assert cdn_hits, "the mirror never fetched from the CDN"
    assert not any(e["auth"] for e in cdn_hits), cdn_hits
    # the hub itself did get the client's token (forwarded)
    assert any(e["auth"] for e in stats["recent"] if e["host"] == "hub" and e["route"] == "resolve")


def test_regular_file_behind_resolve_cache_307_is_followed(mirror, emu):
    entry = emu.file("acme/tiny-model", "main", "tokenizer.json")
    r = mirror.resolve("GET", "acme/tiny-model", "main", "tokenizer.json")
    assert_file_response(r, entry, emu.commit("acme/tiny-model", "main"))
    stats = emu.stats()
    assert stats["by_route"]["resolve_cache"] >= 1, stats["by_route"]


@pytest.mark.parametrize("query", ["", "?%2Facme%2Ftiny-model%2Fresolve%2Fmain%2Fconfig.json=&etag=x"])
def test_mirror_serves_resolve_cache_route_itself(shared_mirror, emu, query):
    commit = emu.commit("acme/tiny-model", "main")
    entry = emu.file("acme/tiny-model", "main", "config.json")
    for method in ("HEAD", "GET"):
        r = shared_mirror.request(method, f"/api/resolve-cache/models/acme/tiny-model/{commit}/config.json{query}")
        assert_file_response(r, entry, commit, method)


@pytest.mark.parametrize("path", ["config.json", "model.safetensors"])
def test_renamed_repo_resolve_is_followed(shared_mirror, emu, path):
    entry = emu.file("acme/new-name", "main", path)
    commit = emu.commit("acme/new-name", "main")
    for method in ("HEAD", "GET"):
        r = shared_mirror.resolve(method, "acme/old-name", "main", path)
        assert_file_response(r, entry, commit, method)


def test_renamed_repo_api_is_followed(shared_mirror, emu):
    commit = emu.commit("acme/new-name", "main")
    for path in ("/api/models/acme/old-name", "/api/models/acme/old-name/revision/main"):
        r = shared_mirror.get(path)
        assert r.status_code == 200, (path, r.status_code, dict(r.headers), r.text[:300])
        info = r.json()
        assert info["id"] == "acme/new-name"
        assert info["sha"] == commit
    # following redirects (as API clients do) never leaves the mirror
    r = shared_mirror.get("/api/models/acme/old-name/tree/main", allow_redirects=True)
    assert r.status_code == 200
    for hop in r.history:
        loc = hop.headers.get("Location", "")
        assert loc.startswith("/") or loc.startswith(shared_mirror.url), loc
    assert {e["path"] for e in r.json()} == set(emu.files("acme/new-name", "main"))


def test_cold_get_streams_before_the_file_is_complete(emu_factory, mirror_factory):
    """R10: a cold GET starts sending bytes long before the whole file could have been fetched
    (CDN limited to 2 MiB/s per connection: all of big.bin would take ~16 s)."""
    e = emu_factory(big_size=32 * MiB, extra=("--cdn-rate", str(2 * MiB)))
    entry = e.file("acme/big-model", "main", "big.bin")
    first = e.http.get(f"{e.hub}/_emulator/content/{entry['sha256']}", headers={"Range": "bytes=0-1048575"},
                       timeout=30).content
    m = mirror_factory(e, cache={"block_size": "1MiB"})
    t0 = time.monotonic()
    with m.resolve("GET", "acme/big-model", "main", "big.bin", stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["Content-Length"] == str(entry["size"])
        got = b""
        for chunk in r.iter_content(64 * 1024):
            got += chunk
            if len(got) >= len(first):
                break
        ttfb = time.monotonic() - t0
    assert got[:len(first)] == first
    assert ttfb < 8, f"first MiB took {ttfb:.1f}s: the mirror waited for (much of) the whole file"


def test_second_download_comes_from_disk(mirror, emu):
    files = ["config.json", "model.safetensors", "tokenizer.json", "sub/dir/notes.txt"]
    for path in files:
        assert mirror.resolve("GET", "acme/tiny-model", "main", path).status_code == 200
    time.sleep(0.5)                      # let any background completion finish
    emu.reset()
    sha = emu.commit("acme/tiny-model", "main")
    for rev in ("main", sha):
        for path in files:
            r = mirror.resolve("GET", "acme/tiny-model", rev, path)
            assert r.status_code == 200
            assert sha256(r.content) == emu.file("acme/tiny-model", "main", path)["sha256"]
    stats = emu.stats()
    assert stats["cdn_bytes"] == 0 and stats["hub_file_bytes"] == 0, stats["recent"]
    assert stats["by_route"]["cdn"] == 0 and stats["by_route"]["resolve_cache"] == 0, stats["by_route"]
