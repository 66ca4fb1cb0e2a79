"""Branch -> commit mappings are trusted for revision_ttl, then asked again (R4)."""

from __future__ import annotations

import time

from helpers import sha256


def commit_seen(m, rev: str = "main") -> tuple[str, str, bytes]:
    r = m.resolve("GET", "acme/tiny-model", rev, "config.json")
    assert r.status_code == 200, (r.status_code, dict(r.headers))
    info = m.get(f"/api/models/acme/tiny-model/revision/{rev}")
    assert info.status_code == 200
    return r.headers["X-Repo-Commit"], info.json()["sha"], r.content


def test_branch_move_becomes_visible_after_revision_ttl(own_emu, mirror_factory):
    m = mirror_factory(own_emu, revision_ttl="2s")
    old = own_emu.commit("acme/tiny-model", "main")
    new = own_emu.commit("acme/tiny-model", "refs/pr/1")       # config.json differs there
    t0 = time.monotonic()
    assert commit_seen(m)[:2] == (old, old)
    moved = own_emu.move_branch("acme/tiny-model", "main", new)
    assert moved["previous"] == old
    if time.monotonic() - t0 < 1.5:
        resolve_sha, info_sha, body = commit_seen(m)
        assert (resolve_sha, info_sha) == (old, old), "the mapping must be trusted for revision_ttl"
        assert body == b'{"model_type":"tiny","v":2}'
    time.sleep(max(0.0, t0 + 3.0 - time.monotonic()))
    resolve_sha, info_sha, body = commit_seen(m)
    assert (resolve_sha, info_sha) == (new, new), "after revision_ttl the new commit must be served"
    assert body == b'{"model_type":"tiny","v":4}'
    head = m.resolve("HEAD", "acme/tiny-model", "main", "config.json")
    assert head.headers["X-Repo-Commit"] == new
    assert head.headers["ETag"] == f'"{own_emu.file("acme/tiny-model", new, "config.json")["oid"]}"'
    # refs follow too
    refs = m.get("/api/models/acme/tiny-model/refs").json()
    assert {b["name"]: b["targetCommit"] for b in refs["branches"]}["main"] == new


def test_commit_addressed_answers_do_not_change(own_emu, mirror_factory):
    m = mirror_factory(own_emu, revision_ttl="0s")
    old = own_emu.commit("acme/tiny-model", "main")
    body = m.resolve("GET", "acme/tiny-model", old, "config.json").content
    own_emu.move_branch("acme/tiny-model", "main", own_emu.commit("acme/tiny-model", "dev"))
    r = m.resolve("GET", "acme/tiny-model", old, "config.json")
    assert r.headers["X-Repo-Commit"] == old
    assert r.content == body
    # revision_ttl 0s: a branch is asked every time
    assert m.resolve("HEAD", "acme/tiny-model", "main", "config.json").headers["X-Repo-Commit"] == \
        own_emu.commit("acme/tiny-model", "dev")
    assert sha256(m.resolve("GET", "acme/tiny-model", "main", "extra.bin").content) == \
        own_emu.file("acme/tiny-model", "dev", "extra.bin")["sha256"]
