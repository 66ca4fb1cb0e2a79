"""Repo API through the mirror: info, revision, tree pagination (R8), paths-info, refs, Xet
stripping (R7), pass-through of other routes."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from helpers import VALID

LINK_RE = re.compile(r'<([^>]*)>\s*;\s*rel="?([^";,]+)"?')


def links(r) -> dict[str, str]:
    return {rel: url for url, rel in LINK_RE.findall(r.headers.get("Link", ""))}


def walk_json(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk_json(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_json(v)


def assert_no_xet_headers(r) -> None:
    xet = {k: v for k, v in r.headers.items() if k.lower().startswith("x-xet-")}
    assert not xet, xet
    link = r.headers.get("Link", "")
    assert "xet-auth" not in link and "xet-reconstruction-info" not in link, link


# --------------------------------------------------------------------------------------------
# repo info (R4)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rev", [None, "main", "dev", "v1.0", "refs/pr/1"])
def test_repo_info_sha_matches_resolve_commit(shared_mirror, emu, rev):
    path = "/api/models/acme/tiny-model" + (f"/revision/{quote(rev, safe='')}" if rev else "")
    r = shared_mirror.get(path)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    info = r.json()
    expected = emu.commit("acme/tiny-model", rev or "main")
    assert info["sha"] == expected
    assert info["id"] == "acme/tiny-model"
    assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(emu.files("acme/tiny-model", rev or "main"))
    resolved = shared_mirror.resolve("HEAD", "acme/tiny-model", rev or "main", "config.json")
    assert resolved.headers["X-Repo-Commit"] == info["sha"]


@pytest.mark.parametrize("repo_type,repo", [("datasets", "acme/tiny-dataset"), ("spaces", "acme/tiny-space"),
                                            ("models", "tinyllama")])
def test_repo_info_other_types(shared_mirror, emu, repo_type, repo):
    r = shared_mirror.get(f"/api/{repo_type}/{repo}/revision/main")
    assert r.status_code == 200, r.text[:300]
    assert r.json()["sha"] == emu.commit(repo, "main")
    assert sorted(s["rfilename"] for s in r.json()["siblings"]) == sorted(emu.files(repo, "main"))


def test_repo_info_blobs(shared_mirror, emu):
    r = shared_mirror.get("/api/models/acme/tiny-model/revision/main", params={"blobs": "true"})
    assert r.status_code == 200
    files = emu.files("acme/tiny-model", "main")
    siblings = {s["rfilename"]: s for s in r.json()["siblings"]}
    assert set(siblings) == set(files)
    for path, entry in files.items():
        s = siblings[path]
        assert s["size"] == entry["size"], path
        assert s["blobId"] == entry["oid"], path
        if entry["lfs"]:
            assert s["lfs"]["sha256"] == entry["sha256"], path
            assert s["lfs"]["size"] == entry["size"], path
        else:
            assert "lfs" not in s, path
    # without blobs=true the answer is the plain shape (query strings are part of the cache key)
    plain = shared_mirror.get("/api/models/acme/tiny-model/revision/main").json()
    assert all(set(s) == {"rfilename"} for s in plain["siblings"]), plain["siblings"][:3]


# --------------------------------------------------------------------------------------------
# tree (R8)
# --------------------------------------------------------------------------------------------

def follow_tree(mirror, first_url: str, max_pages: int = 50) -> tuple[list[dict], list[str]]:
    entries, urls, url = [], [], first_url
    for _ in range(max_pages):
        r = mirror.http.get(url, timeout=60, allow_redirects=False)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        entries += r.json()
        urls.append(url)
        nxt = links(r).get("next")
        if not nxt:
            return entries, urls
        url = nxt
    raise AssertionError(f"more than {max_pages} tree pages")


@pytest.mark.parametrize("expand", ["false", "true"])
def test_paginated_tree_links_point_at_the_mirror(shared_mirror, emu, expand):
    start = f"{shared_mirror.url}/api/models/acme/many-files/tree/main?recursive=true&expand={expand}"
    entries, urls = follow_tree(shared_mirror, start)
    assert len(urls) >= 4, f"expected several pages, got {len(urls)}"
    for url in urls[1:]:
        assert url.startswith(shared_mirror.url + "/api/models/acme/many-files/tree/"), url
        assert "cursor=" in url
    files = [e["path"] for e in entries if e["type"] == "file"]
    assert len(files) == len(set(files)) == 350
    assert set(files) == set(emu.files("acme/many-files", "main"))
    if expand == "true":
        assert all("lastCommit" in e for e in entries)


def test_links_behind_a_tls_terminating_proxy_use_https(shared_mirror):
    r = shared_mirror.get("/api/models/acme/many-files/tree/main?recursive=true",
                          headers={"X-Forwarded-Proto": "https", "Host": "hub.example:8443"})
    assert r.status_code == 200
    nxt = links(r).get("next")
    assert nxt and nxt.startswith("https://hub.example:8443/api/models/acme/many-files/tree/"), nxt


def test_configured_public_url_is_used_in_links(emu, mirror_factory):
    mirror = mirror_factory(emu, public_url="https://mirror.example/hf")
    r = mirror.get("/api/models/acme/many-files/tree/main?recursive=true")
    nxt = links(r).get("next")
    assert nxt and nxt.startswith("https://mirror.example/hf/api/models/acme/many-files/tree/"), nxt


def test_tree_of_a_commit_is_complete(shared_mirror, emu):
    sha = emu.commit("acme/tiny-model", "dev")
    r = shared_mirror.get(f"/api/models/acme/tiny-model/tree/{sha}", params={"recursive": "true", "expand": "false"})
    assert r.status_code == 200
    files = {e["path"]: e for e in r.json() if e["type"] == "file"}
    expected = emu.files("acme/tiny-model", sha)
    assert set(files) == set(expected)
    for path, e in files.items():
        assert e["oid"] == expected[path]["oid"]
        assert e["size"] == expected[path]["size"]
        if expected[path]["lfs"]:
            assert e["lfs"] == {"oid": expected[path]["sha256"], "size": expected[path]["size"],
                                "pointerSize": expected[path]["pointer_size"]}


@pytest.mark.parametrize("sub,expected", [
    ("sub", ["sub/dir"]),
    ("sub%2Fdir", ["sub/dir/notes.txt"]),
    ("sub/dir", ["sub/dir/notes.txt"]),
])
def test_tree_sub_path(shared_mirror, sub, expected):
    r = shared_mirror.get(f"/api/models/acme/tiny-model/tree/main/{sub}")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert [e["path"] for e in r.json()] == expected


def test_tree_missing_sub_path_is_entry_not_found(shared_mirror):
    r = shared_mirror.get("/api/models/acme/tiny-model/tree/main/additional_chat_templates",
                          params={"recursive": "false", "expand": "false"})
    assert r.status_code == 404
    assert r.headers.get("X-Error-Code") == "EntryNotFound"


@pytest.mark.parametrize("repo", ["acme/xet-model", "acme/tiny-model"])
def test_xet_hash_is_stripped_from_tree_and_paths_info(shared_mirror, emu, repo):
    manifest_files = emu.files(repo, "main")
    assert any("xet_hash" in f for f in manifest_files.values()), "emulator should advertise xetHash here"
    tree = shared_mirror.get(f"/api/models/{repo}/tree/main", params={"recursive": "true", "expand": "true"})
    assert tree.status_code == 200
    pinfo = shared_mirror.post(f"/api/models/{repo}/paths-info/main",
                               data={"paths": list(manifest_files), "expand": "true"})
    assert pinfo.status_code == 200, pinfo.text[:300]
    for r in (tree, pinfo):
        assert_no_xet_headers(r)
        assert "xetHash" not in r.text, r.text[:500]
        lfs_entries = [e for e in r.json() if "lfs" in e]
        assert lfs_entries, "the lfs object must be kept"
        for e in lfs_entries:
            assert set(e["lfs"]) >= {"oid", "size", "pointerSize"}
            assert e["lfs"]["oid"] == manifest_files[e["path"]]["sha256"]


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_xet_headers_are_stripped_from_resolve(shared_mirror, emu, method):
    entry = emu.file("acme/xet-model", "main", "model.safetensors")
    r = shared_mirror.resolve(method, "acme/xet-model", "main", "model.safetensors", headers=VALID)
    assert r.status_code == 200
    assert_no_xet_headers(r)
    assert r.headers["ETag"] == f'"{entry["sha256"]}"'
    assert "Location" not in r.headers


def test_xet_read_token_is_refused_with_a_client_error(shared_mirror, emu):
    """docs/protocol.md: the mirror serves HTTP only; the token route fails fast (4xx) and never
    hands out a CAS URL."""
    sha = emu.commit("acme/xet-model", "main")
    r = shared_mirror.get(f"/api/models/acme/xet-model/xet-read-token/{sha}", headers=VALID)
    assert 400 <= r.status_code < 500, r.status_code
    assert_no_xet_headers(r)
    assert emu.stats()["by_route"]["xet_token"] == 0


# --------------------------------------------------------------------------------------------
# paths-info, refs, pass-through
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("expand", ["False", "false"])
def test_paths_info_form_body_with_repeated_paths(shared_mirror, emu, expand):
    body = ("paths=config.json&paths=sub%2Fdir%2Fnotes.txt&paths=model.safetensors"
            f"&paths=does-not-exist.txt&paths=sub&expand={expand}")
    r = shared_mirror.post("/api/models/acme/tiny-model/paths-info/main", data=body,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, (r.status_code, r.text[:300])
    got = {e["path"]: e for e in r.json()}
    assert set(got) == {"config.json", "sub/dir/notes.txt", "model.safetensors", "sub"}
    files = emu.files("acme/tiny-model", "main")
    for path in ("config.json", "sub/dir/notes.txt", "model.safetensors"):
        assert got[path]["type"] == "file"
        assert got[path]["oid"] == files[path]["oid"]
        assert got[path]["size"] == files[path]["size"]
        assert "lastCommit" not in got[path]
    assert got["sub"]["type"] == "directory"


def test_paths_info_on_pr_revision(shared_mirror, emu):
    r = shared_mirror.post("/api/models/acme/tiny-model/paths-info/refs%2Fpr%2F1",
                           data={"paths": ["config.json"], "expand": "false"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()[0]["oid"] == emu.file("acme/tiny-model", "refs/pr/1", "config.json")["oid"]


def test_refs_with_prs(shared_mirror, emu):
    refs = emu.manifest["repos"]["acme/tiny-model"]["refs"]
    r = shared_mirror.get("/api/models/acme/tiny-model/refs", params={"include_prs": "1"})
    assert r.status_code == 200, r.text[:300]
    data = r.json()
    assert {b["name"]: b["targetCommit"] for b in data["branches"]} == refs["branches"]
    assert {t["name"]: t["targetCommit"] for t in data["tags"]} == refs["tags"]
    assert {p["ref"]: p["targetCommit"] for p in data["pullRequests"]} == refs["prs"]
    plain = shared_mirror.get("/api/models/acme/tiny-model/refs").json()
    assert not plain.get("pullRequests"), "include_prs must be part of the cache key"
    ds = shared_mirror.get("/api/datasets/acme/tiny-dataset/refs").json()
    assert [c["ref"] for c in ds["converts"]] == ["refs/convert/parquet"]


def test_commits_route_is_passed_through(shared_mirror, emu):
    r = shared_mirror.get("/api/models/acme/tiny-model/commits/main")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    commits = r.json()
    assert commits[0]["id"] == emu.commit("acme/tiny-model", "main")
    assert emu.stats()["by_route"]["commits"] >= 1


def test_whoami_is_passed_through_with_the_token(shared_mirror, emu):
    r = shared_mirror.get("/api/whoami-v2", headers=VALID)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.json()["name"] == "alice"
    anon = shared_mirror.get("/api/whoami-v2")
    assert anon.status_code == 401
    assert emu.stats()["by_route"]["whoami"] == 2


def test_unknown_route_is_passed_through(shared_mirror, emu):
    r = shared_mirror.get("/api/some/unknown/route?x=1")
    assert r.status_code == 404
    stats = emu.stats()
    assert any(e["path"] == "/api/some/unknown/route" for e in stats["recent"]), stats["recent"][-5:]


def test_json_answers_keep_their_content_type_and_parse(shared_mirror):
    r = shared_mirror.get("/api/models/acme/tiny-model", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert "json" in r.headers.get("Content-Type", "")
    json.loads(r.content)
