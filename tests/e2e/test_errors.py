"""HF error answers through the mirror (R6) and malformed requests."""

from __future__ import annotations

import pytest

from helpers import OTHER, VALID, sha256


def assert_hf_error(r, status, code: str | None, *, commit: str | None = None) -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, dict(r.headers), r.text[:300])
    if code is not None:
        assert r.headers.get("X-Error-Code") == code, dict(r.headers)
    assert r.headers.get("X-Error-Message"), dict(r.headers)
    if commit is not None:
        assert r.headers.get("X-Repo-Commit") == commit, dict(r.headers)


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_missing_file_is_entry_not_found_with_commit(shared_mirror, emu, method):
    r = shared_mirror.resolve(method, "acme/tiny-model", "main", "does/not/exist.bin")
    assert_hf_error(r, 404, "EntryNotFound", commit=emu.commit("acme/tiny-model", "main"))


def test_missing_file_in_lfs_heavy_dataset_is_entry_not_found(shared_mirror, emu):
    r = shared_mirror.resolve("GET", "acme/tiny-dataset", "main", "data/nope.parquet", "dataset")
    assert_hf_error(r, 404, "EntryNotFound", commit=emu.commit("acme/tiny-dataset", "main"))


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_bad_revision_is_revision_not_found(shared_mirror, method):
    r = shared_mirror.resolve(method, "acme/tiny-model", "no-such-branch", "config.json")
    assert_hf_error(r, 404, "RevisionNotFound")
    r = shared_mirror.resolve(method, "acme/tiny-model", "f" * 40, "config.json")
    assert_hf_error(r, 404, "RevisionNotFound")


@pytest.mark.parametrize("path", ["/acme/no-such-repo/resolve/main/config.json",
                                  "/api/models/acme/no-such-repo",
                                  "/api/models/acme/no-such-repo/revision/main",
                                  "/api/models/acme/no-such-repo/tree/main",
                                  "/datasets/acme/no-such-repo/resolve/main/README.md"])
def test_unknown_repo_is_repo_not_found(shared_mirror, path):
    r = shared_mirror.get(path)
    assert_hf_error(r, (401, 404), "RepoNotFound")


def test_api_revision_errors(shared_mirror):
    r = shared_mirror.get("/api/models/acme/tiny-model/revision/no-such-branch")
    assert_hf_error(r, 404, "RevisionNotFound")
    r = shared_mirror.get("/api/models/acme/tiny-model/tree/main/no/such/dir")
    assert_hf_error(r, 404, "EntryNotFound")


@pytest.mark.parametrize("path", ["config.json", "model.safetensors"])
def test_gated_repo_by_token(mirror, emu, path):
    entry = emu.file("acme/gated-model", "main", path)
    anon = mirror.resolve("GET", "acme/gated-model", "main", path)
    assert_hf_error(anon, 401, "GatedRepo")
    assert "restricted" in anon.headers["X-Error-Message"], "upstream message must reach the client"
    other = mirror.resolve("GET", "acme/gated-model", "main", path, headers=OTHER)
    assert_hf_error(other, 403, "GatedRepo")
    assert "not in the authorized list" in other.headers["X-Error-Message"]
    ok = mirror.resolve("GET", "acme/gated-model", "main", path, headers=VALID)
    assert ok.status_code == 200, dict(ok.headers)
    assert sha256(ok.content) == entry["sha256"]
    assert ok.headers["X-Repo-Commit"] == emu.commit("acme/gated-model", "main")
    head = mirror.resolve("HEAD", "acme/gated-model", "main", path, headers=VALID)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(entry["size"])
    assert emu.stats()["auth_leaks"] == 0


def test_private_repo_by_token(mirror, emu):
    anon = mirror.resolve("GET", "acme/private-model", "main", "config.json")
    assert_hf_error(anon, 401, "RepoNotFound")
    other = mirror.resolve("GET", "acme/private-model", "main", "config.json", headers=OTHER)
    assert_hf_error(other, (401, 403, 404), "RepoNotFound")
    ok = mirror.resolve("GET", "acme/private-model", "main", "weights.bin", headers=VALID)
    assert ok.status_code == 200
    assert sha256(ok.content) == emu.file("acme/private-model", "main", "weights.bin")["sha256"]


def test_invalid_token_error_is_passed_on(mirror):
    for method in ("GET", "HEAD"):
        r = mirror.resolve(method, "acme/tiny-model", "main", "tokenizer.json",
                           headers={"Authorization": "Bearer hf_definitely_not_valid"})
        assert r.status_code == 401, (method, r.status_code, dict(r.headers))
        assert "Invalid credentials" in r.headers.get("X-Error-Message", ""), dict(r.headers)


def test_invalid_token_on_a_public_file_with_cached_metadata_is_never_a_gateway_error(mirror, emu):
    """Once the mirror knows a public file's metadata it may answer a HEAD with a bad token from
    it (200); the GET that follows must then not fail with a 5xx from the refused fill (the
    client would retry for a minute and report a network error): serve the public bytes, or
    pass the upstream's 401 on."""
    entry = emu.file("acme/tiny-model", "main", "tokenizer.json")
    assert mirror.resolve("HEAD", "acme/tiny-model", "main", "tokenizer.json").status_code == 200
    bad = {"Authorization": "Bearer hf_definitely_not_valid"}
    head = mirror.resolve("HEAD", "acme/tiny-model", "main", "tokenizer.json", headers=bad)
    get = mirror.resolve("GET", "acme/tiny-model", "main", "tokenizer.json", headers=bad)
    assert get.status_code in (200, 401), (get.status_code, dict(get.headers))
    if get.status_code == 200:
        assert sha256(get.content) == entry["sha256"]
    else:
        assert "Invalid credentials" in get.headers.get("X-Error-Message", ""), dict(get.headers)
    assert head.status_code == get.status_code, \
        f"HEAD said {head.status_code} but GET said {get.status_code} for the same request"


@pytest.mark.parametrize("raw_path", [
    "/acme/tiny-model/resolve/main/%2E%2E/%2E%2E/etc/passwd",
    "/acme/tiny-model/resolve/main/..%2F..%2F..%2Fetc%2Fpasswd",
    "/acme/tiny-model/resolve/main/../../../etc/passwd",
    "/acme/tiny-model/resolve/%2E%2E/config.json",
    "/acme/tiny-model/resolve/main/sub/%2E%2E/%2E%2E/%2E%2E/config.json",
    "/acme/tiny-model/resolve/main/",
    "/acme/tiny-model/resolve/main/%00.txt",
    "/acme/tiny-model/resolve/main/%ZZ",
    "/api/models/acme/tiny-model/tree/main/%2E%2E%2F%2E%2E",
    "/api/models/%2E%2E/%2E%2E/tree/main",
])
def test_malformed_requests_get_4xx_never_5xx(shared_mirror, raw_path):
    for method in ("GET", "HEAD"):
        status, headers, body = shared_mirror.raw(method, raw_path)
        assert 400 <= status < 500, (method, raw_path, status, headers, body[:300])
        assert b"root:" not in body
    assert shared_mirror.running


def test_unsupported_method_on_resolve_is_4xx(shared_mirror):
    r = shared_mirror.request("DELETE", "/acme/tiny-model/resolve/main/config.json")
    assert 400 <= r.status_code < 500, r.status_code
