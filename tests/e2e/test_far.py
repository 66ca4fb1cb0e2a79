"""Far from the hub (issue 13): metadata answered from listings, and no extra hub round trips.

- After a per-commit listing (tree, paths-info, repo info with blobs), the mirror answers a
  file's HEAD without asking the hub, and says exactly what the hub's HEAD says (commit, etag,
  size, linked etag and size for LFS), for every kind of file the emulator serves.
- A cold single-file hf_hub_download through the mirror costs the hub no more requests of any
  kind than the same download made direct.
"""

from __future__ import annotations

import time
from collections import Counter
from urllib.parse import urljoin, urlsplit

import pytest

import helpers
from helpers import resolve_path, run_client

REPO = "acme/tiny-model"
REV = "dev"  # regular, empty, nested, oddly named, LFS with xetHash, and another LFS file


def client_metadata(base: str, path: str) -> dict:
    """What huggingface_hub reads from a resolve HEAD: same-origin redirects followed, the
    metadata taken from the final answer (or from an off-origin redirect)."""
    http = helpers.session()
    url = base + path
    for _ in range(10):
        r = http.head(url, allow_redirects=False, timeout=30)
        location = r.headers.get("location")
        if 300 <= r.status_code < 400 and location:
            target = urljoin(url, location)
            if urlsplit(target)[:2] == urlsplit(url)[:2]:
                url = target
                continue
        break
    assert r.status_code < 400, f"HEAD {path}: {r.status_code}"
    linked_etag = (r.headers.get("x-linked-etag") or "").strip('"') or None
    etag = r.headers.get("x-linked-etag") or r.headers.get("etag") or ""
    size = r.headers.get("x-linked-size")
    if size is None and not 300 <= r.status_code < 400:
        size = r.headers.get("content-length")
    return {
        "commit": r.headers.get("x-repo-commit"),
        "etag": etag.removeprefix("W/").strip('"'),
        "size": int(size) if size is not None else None,
        # LFS files: the pair the client reads first (the mirror also sends X-Linked-Size
        # for regular files, where the hub sends only Content-Length: the same number).
        "linked_etag": linked_etag,
        "linked_size": r.headers.get("x-linked-size") if linked_etag else None,
    }


def hub_heads(emu, m) -> list[tuple[str, str]]:
    return [(e["method"], e["route"]) for e in emu.stats()["recent"]
            if e["method"] == "HEAD" and e["route"] in ("resolve", "resolve_cache")]


def list_through(m, kind: str, commit: str, paths: list[str]) -> None:
    api = f"/api/models/{REPO}"
    if kind == "tree":
        r = m.get(f"{api}/tree/{REV}?recursive=true&expand=false")
    elif kind == "paths-info":
        r = m.post(f"{api}/paths-info/{REV}", data={"paths": paths, "expand": "false"})
    else:
        r = m.get(f"{api}/revision/{REV}?blobs=true")
    assert r.status_code == 200, (kind, r.status_code, r.text[:300])


@pytest.mark.parametrize("kind", ["tree", "paths-info", "repo-info-blobs"])
def test_head_after_a_listing_is_answered_locally_and_says_what_the_hub_says(
        emu, mirror_factory, kind):
    files = emu.files(REPO, REV)
    commit = emu.commit(REPO, REV)
    kinds = {"lfs": any(f["lfs"] for f in files.values()),
             "empty": any(f["size"] == 0 for f in files.values()),
             "nested": any("/" in p for p in files)}
    assert all(kinds.values()), kinds
    direct = {p: client_metadata(emu.hub, resolve_path(REPO, commit, p)) for p in files}
    for p, meta in direct.items():
        assert meta["commit"] == commit and meta["size"] == files[p]["size"], (p, meta)

    # No prefetch here: its fills would locate the files with HEADs of their own.
    m = mirror_factory(emu, fill={"prefetch": {"enabled": False}})
    # The revision answer tells the mirror the repo is public (who may be served from cache).
    assert m.get(f"/api/models/{REPO}/revision/{REV}").status_code == 200
    list_through(m, kind, commit, sorted(files))
    emu.reset(refs=False)
    via_listing = {p: client_metadata(m.url, resolve_path(REPO, commit, p)) for p in files}
    assert hub_heads(emu, m) == [], "HEADs went to the hub although the listing named the files"
    assert via_listing == direct

    # And the same as the mirror says when it learned the file from the hub's own HEAD.
    fresh = mirror_factory(emu)
    via_head = {p: client_metadata(fresh.url, resolve_path(REPO, commit, p)) for p in files}
    assert via_head == via_listing


def route_counts(emu) -> Counter:
    return Counter((e["method"], e["route"]) for e in emu.stats()["recent"]
                   if e["route"] not in ("other", "whoami"))


def test_a_cold_single_file_costs_no_more_hub_requests_than_direct(emu, mirror, tmp_path):
    op = {"op": "download", "repo_id": REPO, "filename": "config.json"}
    emu.reset(refs=False)
    direct = run_client(emu.hub, tmp_path / "direct", [op], sandbox=False)
    assert direct[0]["ok"], direct
    direct_counts = route_counts(emu)

    emu.reset(refs=False)
    via = run_client(mirror.url, tmp_path / "via", [op])
    assert via[0]["ok"], via
    assert via[0]["sha256"] == direct[0]["sha256"]
    mirror_counts = route_counts(emu)

    assert sum(mirror_counts.values()) <= sum(direct_counts.values()), (mirror_counts, direct_counts)
    for key, n in mirror_counts.items():
        assert n <= direct_counts.get(key, 0), (key, mirror_counts, direct_counts)


SNAP = "acme/snapshot-300"


def list_snapshot(m) -> None:
    """What snapshot_download asks first: the revision, then every tree page (Link: next)."""
    assert m.get(f"/api/models/{SNAP}/revision/main").status_code == 200
    url = f"/api/models/{SNAP}/tree/main?recursive=true&expand=false"
    for _ in range(20):
        r = m.get(url)
        assert r.status_code == 200, r.text[:300]
        nxt = r.links.get("next", {}).get("url")
        if not nxt:
            return
        url = nxt.removeprefix(m.url)
    raise AssertionError("more than 20 tree pages")


def test_a_listing_prefetches_its_small_regular_files_and_never_lfs(emu, mirror_factory, tmp_path):
    files = emu.files(SNAP, "main")
    regular = {p: f for p, f in files.items() if not f["lfs"]}
    lfs = {p: f for p, f in files.items() if f["lfs"]}
    assert len(regular) == 280 and len(lfs) == 20
    m = mirror_factory(emu, fill={"prefetch": {"enabled": True, "parallel": 4}})
    emu.reset(refs=False)
    list_snapshot(m)
    helpers.wait_until(lambda: m.metric("hubcache_prefetched_files_total") >= len(regular), 90,
                       what="every small regular file prefetched")
    assert m.metric("hubcache_prefetched_files_total") == len(regular)
    assert m.metric("hubcache_prefetched_bytes_total") == sum(f["size"] for f in regular.values())
    stats = emu.stats()
    assert stats["by_route"]["cdn"] == 0, "an LFS file nobody asked for was fetched"
    assert stats["hub_file_bytes"] == sum(f["size"] for f in regular.values()), "fetched twice?"

    # The client then gets the regular files from the cache and only the LFS ones from the hub.
    emu.reset(refs=False)
    done = run_client(m.url, tmp_path / "client", [{"op": "snapshot", "repo_id": SNAP}])
    assert done[0]["ok"], done
    assert done[0]["files"] == helpers.expected_files(emu, SNAP, "main")
    stats = emu.stats()
    assert stats["hub_file_bytes"] == 0, "a prefetched file was fetched again"
    assert stats["cdn_bytes"] == sum(f["size"] for f in lfs.values())
    # The only HEADs are the fills' own, locating each LFS file's bytes (its CDN URL) once.
    heads = Counter(e["path"].split(f"/resolve/{emu.commit(SNAP, 'main')}/", 1)[-1]
                    for e in stats["recent"] if e["method"] == "HEAD")
    assert set(heads) <= set(lfs) and max(heads.values(), default=0) <= 1, heads


def test_prefetch_disabled_fetches_nothing_ahead(emu, mirror_factory):
    m = mirror_factory(emu, fill={"prefetch": {"enabled": False}})
    emu.reset(refs=False)
    list_snapshot(m)
    # Give a prefetcher that should not exist the time it would need to start.
    time.sleep(1.0)
    assert m.metric("hubcache_prefetched_files_total") == 0
    assert emu.stats()["hub_file_bytes"] == 0
