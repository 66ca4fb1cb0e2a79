"""offline: true — restarted on a warm cache, the mirror serves what it has, answers HF 404s for
everything else, and never contacts an upstream."""

from __future__ import annotations

import pytest

from helpers import sha256

FILES = [
    ("model", "acme/tiny-model", "main", "config.json"),
    ("model", "acme/tiny-model", "main", "model.safetensors"),
    ("model", "acme/tiny-model", "main", "weird name +#%é.txt"),
    ("model", "acme/tiny-model", "refs/pr/1", "config.json"),
    ("model", "acme/tiny-model", "v1.0", "config.json"),
    ("dataset", "acme/tiny-dataset", "main", "data/train.parquet"),
    ("model", "tinyllama", "main", "config.json"),
]
API = ["/api/models/acme/tiny-model",
       "/api/models/acme/tiny-model/revision/main",
       "/api/models/acme/tiny-model/revision/main?blobs=true",
       "/api/models/acme/tiny-model/tree/main?recursive=true&expand=false",
       "/api/models/acme/tiny-model/refs",
       "/api/datasets/acme/tiny-dataset/revision/main"]


@pytest.fixture
def offline_mirror(own_emu, mirror_factory):
    """A mirror warmed online, then restarted with offline: true on the same cache dir."""
    m = mirror_factory(own_emu)
    seen = {}
    for repo_type, repo, rev, path in FILES:
        r = m.resolve("GET", repo, rev, path, repo_type)
        assert r.status_code == 200
        seen[(repo, rev, path)] = r.headers["X-Repo-Commit"]
    for api in API:
        r = m.get(api)
        assert r.status_code == 200, api
        seen[api] = r.json()
    m.restart(offline=True)
    own_emu.reset()
    m.seen = seen
    yield m
    # the whole point: an offline mirror never talks to an upstream
    stats = own_emu.stats()
    assert stats["requests"] == 0, f"offline mirror sent {stats['requests']} requests: {stats['recent'][:5]}"


def test_offline_serves_cached_files_by_branch_tag_and_sha(offline_mirror, own_emu):
    m = offline_mirror
    failures = []
    for repo_type, repo, rev, path in FILES:
        commit = m.seen[(repo, rev, path)]
        entry = own_emu.file(repo, rev, path)
        for r_rev in (rev, commit):
            for method in ("HEAD", "GET"):
                r = m.resolve(method, repo, r_rev, path, repo_type)
                where = f"{method} {repo}@{r_rev}/{path}"
                if r.status_code != 200:
                    failures.append(f"{where}: {r.status_code} {r.headers.get('X-Error-Code')}")
                    continue
                if r.headers.get("X-Repo-Commit") != commit:
                    failures.append(f"{where}: X-Repo-Commit {r.headers.get('X-Repo-Commit')} != {commit}")
                if r.headers.get("Content-Length") != str(entry["size"]):
                    failures.append(f"{where}: Content-Length {r.headers.get('Content-Length')}")
                if method == "GET" and sha256(r.content) != entry["sha256"]:
                    failures.append(f"{where}: wrong bytes")
    assert not failures, "\n".join(failures)


def test_offline_serves_ranges_of_cached_files(offline_mirror, own_emu):
    data = own_emu.file_bytes("acme/tiny-model", "main", "model.safetensors")
    r = offline_mirror.resolve("GET", "acme/tiny-model", "main", "model.safetensors",
                               headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206
    assert r.content == data[1000:2000]


def test_offline_serves_cached_metadata(offline_mirror):
    m = offline_mirror
    for api in API:
        r = m.get(api)
        assert r.status_code == 200, (api, r.status_code, r.headers.get("X-Error-Message"))
        assert r.json() == m.seen[api], api


def test_offline_uncached_file_is_entry_not_found(offline_mirror, own_emu):
    r = offline_mirror.resolve("GET", "acme/tiny-model", "main", "tokenizer.json")
    assert r.status_code == 404, (r.status_code, dict(r.headers))
    assert r.headers.get("X-Error-Code") == "EntryNotFound"
    head = offline_mirror.resolve("HEAD", "acme/tiny-model", "main", "README.md")
    assert head.status_code == 404 and head.headers.get("X-Error-Code") == "EntryNotFound"


@pytest.mark.parametrize("rev", ["no-such-branch", "dev", "f" * 40])
def test_offline_unknown_revision_is_revision_not_found(offline_mirror, rev):
    """`dev` exists upstream but was never seen by this mirror."""
    r = offline_mirror.resolve("GET", "acme/tiny-model", rev, "config.json")
    assert r.status_code == 404, (r.status_code, dict(r.headers))
    assert r.headers.get("X-Error-Code") == "RevisionNotFound", dict(r.headers)
    info = offline_mirror.get(f"/api/models/acme/tiny-model/revision/{rev}")
    assert info.status_code == 404 and info.headers.get("X-Error-Code") == "RevisionNotFound"


@pytest.mark.parametrize("path", ["/acme/many-files/resolve/main/dir0/file_000.txt",
                                  "/api/models/acme/many-files",
                                  "/api/models/acme/many-files/tree/main",
                                  "/datasets/acme/nothing-here/resolve/main/README.md"])
def test_offline_unknown_repo_is_repo_not_found(offline_mirror, path):
    r = offline_mirror.get(path)
    assert r.status_code in (401, 404), (r.status_code, dict(r.headers))
    assert r.headers.get("X-Error-Code") == "RepoNotFound"


@pytest.mark.parametrize("path", ["/api/models/acme/tiny-model/commits/main", "/api/whoami-v2"])
def test_offline_pass_through_routes_do_not_reach_upstream(offline_mirror, path):
    """Nothing to serve from cache: an error answer (the fixture checks the upstream saw nothing)."""
    r = offline_mirror.get(path, headers={"Authorization": "Bearer hf_valid_token"})
    assert r.status_code >= 400, (r.status_code, r.text[:200])


def test_offline_mirror_starts_with_the_upstream_gone(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    commit = own_emu.commit("acme/tiny-model", "main")
    r = m.resolve("GET", "acme/tiny-model", "main", "config.json")
    assert r.status_code == 200
    own_emu.stop()
    m.restart(offline=True, upstreams=[])
    r = m.resolve("GET", "acme/tiny-model", "main", "config.json")
    assert r.status_code == 200
    assert r.headers["X-Repo-Commit"] == commit


def test_offline_repo_info_without_revision_after_a_client_only_used_revision_main(own_emu, mirror_factory):
    """snapshot_download asks /revision/main; HfApi().model_info() later asks /api/models/{repo}.
    Offline, both name the default branch, whose mapping and info the mirror has."""
    m = mirror_factory(own_emu)
    sha = own_emu.commit("acme/tiny-model", "main")
    r = m.get("/api/models/acme/tiny-model/revision/main")
    assert r.status_code == 200
    m.restart(offline=True)
    r = m.get("/api/models/acme/tiny-model")
    assert r.status_code == 200, (r.status_code, dict(r.headers))
    assert r.json()["sha"] == sha
